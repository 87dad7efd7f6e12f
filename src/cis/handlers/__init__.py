"""Use cases shared by the HTTP API, federation and skills (see docs/ARCHITECTURE.md).

Handlers hold the logic between routes (which parse, authenticate and serialise) and stores
(which hold the SQL); only ``cis.node`` constructs them. One module per concept; refusals are
``cis.handlers.errors.ApiError`` (Matrix errcodes).
"""
