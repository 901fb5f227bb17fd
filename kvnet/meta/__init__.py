"""The Multus-compatible meta-plugin (``kvnet-cni``, thick mode ``kvnet daemon`` + ``kvnet-shim``)."""
