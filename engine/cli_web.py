"""``imgsearch serve``: the HTTP API and the web page under uvicorn (engine.web)."""

from __future__ import annotations

import argparse
import os

from .cli import command
from .config import load_settings


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (default 1); each fingerprints one query at a time, so use one per core")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


@command("serve", "run the HTTP API and the web page", _serve_arguments)
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import db

    settings = load_settings()  # bad settings fail here, before any process starts
    if not settings.api_keys:
        print("imgsearch serve: IMGSEARCH_API_KEYS is not set: writes (storing, deleting) are refused", flush=True)
    db.database_url(settings)  # start the embedded server once, before the workers race to
    if args.workers > 1:
        # every worker process fingerprints one query at a time: keep OpenCV to one thread in each
        os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    uvicorn.run("engine.web.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level, timeout_graceful_shutdown=10, server_header=False)
    return 0
