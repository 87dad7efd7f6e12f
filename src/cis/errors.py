"""The root of every error CIS raises on purpose.

``CisError`` marks an error whose message is meant for a person: one line, naming what went
wrong and, where it can, what to do about it. It never carries secrets or request bodies. The
CLI prints it as ``error: <message>`` and exits 1; anything else that escapes is a bug.

Each package keeps its own hierarchy under this root (``cis.storage.errors``,
``cis.matrix.errors``, ``cis.identity.errors`` …), drawn in that module's docstring.
"""


class CisError(Exception):
    """An expected failure, with a message fit to show to the person who caused it."""
