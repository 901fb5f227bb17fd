"""CNI programs: the protocol, delegate execution, the meta-plugin and the binding plugin."""
