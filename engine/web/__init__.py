"""The HTTP API and the web page (``imgsearch serve``): Starlette under uvicorn.

``app.py`` has the route table and builds the app; ``api.py`` the handlers; ``service.py``
the blocking work they run in threads (fingerprints, SQL); ``guard.py`` API keys, body size
and time limits; ``metrics.py`` the Prometheus counters; ``openapi.py`` the OpenAPI document,
built from the route table; ``static/`` the page (plain HTML, CSS and JavaScript).
"""
