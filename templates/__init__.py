"""Jinja2 templates for libvirt device XML (installed as ``kvnet.templates``)."""
