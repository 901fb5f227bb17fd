"""From VMI + pod facts to libvirt devices: translation (pure), rendering, splicing."""
