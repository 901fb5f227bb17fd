"""The CNI protocol layer (libcni's job): env/stdin, results and versions, delegate execution, libcni's cache."""
