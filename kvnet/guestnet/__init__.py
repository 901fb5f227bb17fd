"""Guest addressing without cloud-init: DHCPv4, router advertisements and DHCPv6 served in the pod.

Layers (docs/guest-addressing.md): ``model`` is the pure lease and option model, ``codec``
owns scapy (frames in and out), ``tapio`` is the unprivileged tap loop, ``main`` the CLI.
"""
