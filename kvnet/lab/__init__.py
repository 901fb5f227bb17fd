"""Local stand-ins and harnesses for the demo and tests (API stand-in, libvirtd, guest)."""
