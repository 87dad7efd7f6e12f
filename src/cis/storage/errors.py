"""Storage errors::

CisError
└── StorageError          a database cannot be opened, read or written
    ├── SchemaTooNew      the file was written by a newer cis-node
    ├── WrongDatabaseKind the file is another kind of CIS database (or not ours)
    ├── DatabaseClosed    a write or read arrived after the database was closed
    ├── HomeInUse         another process holds the home's lock
    ├── NoNode            the home holds no node (``cis-node init`` was not run)
    ├── InvalidInput      a value handed to a store is malformed (nothing was written)
    │   ├── InvalidEvent  an event that does not satisfy the event contract
    │   ├── InvalidQuery  a filter or pagination outside its bounds
    │   └── ImportFailed  a JSONL line that cannot be imported (names the line)
    ├── UnknownEvent      an event id this room does not hold
    ├── UnknownRoom       a room id the node does not hold
    ├── RoomArchived      the room was archived and is read-only
    ├── BackupFailed      a backup could not be written
    └── RestoreFailed     a backup could not be verified or restored (the target is untouched)
"""

from cis.errors import CisError


class StorageError(CisError):
    """A database file cannot be used as asked."""


class SchemaTooNew(StorageError):
    """The file's ``user_version`` is above the last migration this code knows."""


class WrongDatabaseKind(StorageError):
    """The file's ``application_id`` names another kind of database."""


class DatabaseClosed(StorageError):
    """The database was closed (or is closing) when the work arrived."""


class HomeInUse(StorageError):
    """Another process (a running node, an init or a restore) holds the home's lock."""


class NoNode(StorageError):
    """The home holds no node."""


class InvalidInput(StorageError):
    """A value handed to a store is malformed; nothing was written."""


class InvalidEvent(InvalidInput):
    """An event that does not satisfy ``cis.storage.events.PersistableEvent``."""


class InvalidQuery(InvalidInput):
    """A filter or pagination outside its documented bounds."""


class ImportFailed(InvalidInput):
    """A JSONL file that cannot be imported; nothing from it was stored."""


class UnknownEvent(StorageError):
    """An event id the room does not hold (never silently treated as "from the start")."""


class UnknownRoom(StorageError):
    """A room id the node does not hold."""


class RoomArchived(StorageError):
    """The room was archived; it is neither opened nor written."""


class BackupFailed(StorageError):
    """A backup could not be written."""


class RestoreFailed(StorageError):
    """A backup could not be verified or restored; the target home was not touched."""
