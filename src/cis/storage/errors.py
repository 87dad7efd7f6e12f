"""Storage errors::

CisError
└── StorageError          a database cannot be opened, read or written
    ├── SchemaTooNew      the file was written by a newer cis-node
    └── WrongDatabaseKind the file is another kind of CIS database (or not ours)
"""

from cis.errors import CisError


class StorageError(CisError):
    """A database file cannot be used as asked."""


class SchemaTooNew(StorageError):
    """The file's ``user_version`` is above the last migration this code knows."""


class WrongDatabaseKind(StorageError):
    """The file's ``application_id`` names another kind of database."""
