"""CIS: a self-hosted federation of sovereign nodes.

The package layout follows docs/ARCHITECTURE.md: ``identity`` (keys, DIDs), ``matrix`` (pure
Matrix rules), ``storage`` (every SQL statement), ``handlers`` (use cases), ``api`` (HTTP),
``federation`` (tunnels), ``anchor`` (discovery), ``skills``, ``cluster``, ``node`` (the
composition root) and ``cli``.
"""

__version__ = "0.1.0"
