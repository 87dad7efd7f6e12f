"""HTTP APIs served on the node's one port."""
