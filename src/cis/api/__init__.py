"""HTTP on one port, served by uvicorn (see docs/ARCHITECTURE.md, "api/").

``app.create_app`` assembles the routes; ``errors`` turns failures into Matrix-shaped JSON
(``{"errcode": "M_…", "error": "…"}``); ``admin`` holds ``/_cis/admin/v1``.
"""
