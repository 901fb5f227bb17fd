"""The kubelet PodResources API (v1): the .proto and its generated modules."""
