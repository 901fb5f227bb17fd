"""kvnet: a Multus-compatible CNI meta-plugin and a KubeVirt network binding plugin."""

__version__ = "0.1.0"
