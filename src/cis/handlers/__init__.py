"""Use cases shared by the HTTP API, federation and skills (see docs/ARCHITECTURE.md).

One module per concept; each handler takes its stores and collaborators in its constructor
(only ``cis.node`` constructs them) and reports refusals as ``cis.handlers.errors.ApiError``.
"""
