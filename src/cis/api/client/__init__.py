"""The Matrix Client-Server API (``/_matrix/client``, ``/_matrix/media``, ``.well-known``).

``http`` is the ASGI layer (raw-path routing, body limits, Matrix errors, CORS); the other
modules parse requests into handler calls and serialise the results. See
docs/client-server.md.
"""
