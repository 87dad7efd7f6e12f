"""Clusters of nodes: replicated SQL (``raftdb``) now, signed membership later.

See docs/ARCHITECTURE.md ("cluster/") and docs/raftdb.md.
"""
