"""The KubeVirt binding CNI (``kvnet-binding``): the plan, netlink, SR-IOV discovery."""
