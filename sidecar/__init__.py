"""The KubeVirt virt-launcher hook sidecar (installed as ``kvnet.sidecar``)."""
