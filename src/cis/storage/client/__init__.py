"""``node.db`` tables of the Matrix Client-Server API.

- ``schema``: the numbered migrations that add them (appended to ``node.db``'s list);
- ``accounts``: users, devices, hashed access tokens, profiles;
- ``account_data``: global and per-room account data, stored filters, room aliases;
- ``receipts``: read receipts;
- ``e2e``: device keys, one-time and fallback keys, device-list changes, to-device messages;
- ``media``: metadata of uploaded media (the bytes are in the blob store).

Every statement lives in a ``*_txn`` function taking a ``sqlite3.Connection``; the store
classes run them through the database's ``run_interaction`` (writes, on the writer thread,
each in its own savepoint of a group commit) or ``read`` (on a reader connection).
"""
