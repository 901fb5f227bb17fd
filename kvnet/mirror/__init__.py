"""``kvnet-mirror``: a chained CNI plugin that mirrors an attachment's traffic to a port on the node."""
