"""Every SQL statement of the node lives under this package.

``sqlite`` holds the conventions every file follows (pragmas, numbered migrations); the
stores for ``node.db``, the per-room ``events.db`` files, skills' databases and the blob store
build on it. See docs/ARCHITECTURE.md ("storage/").
"""
