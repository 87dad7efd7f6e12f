"""Identity errors::

CisError
└── IdentityError
    ├── InvalidName   a node name that is not a DNS label of our grammar
    └── InvalidDid    a DID that does not parse, or does not match the key it names
"""

from cis.errors import CisError


class IdentityError(CisError):
    """Something about a node's identity is wrong."""


class InvalidName(IdentityError):
    """A node name outside ``^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$``."""


class InvalidDid(IdentityError):
    """A DID that does not parse, or that does not match the key presented with it."""
