"""Read-only HTTP JSON API: GET /state (topology, TM, MLU, link utilisation, router, last routing time).
``GET /state?groups=0`` leaves out the per-pair groups (``groups`` is then empty): what a reader that
polls every second on a large network wants, since expanding every pair's paths costs the controller.

The policy daemon and the demo read it. It serves the snapshot the control loop publishes after each
interval, so a request never touches live controller state.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_state(get_state: Callable[..., dict], port: int, host: str = "127.0.0.1",
                groups_optional: bool = False) -> ThreadingHTTPServer:
    """``groups_optional``: ``get_state`` takes ``groups: bool`` and ``?groups=0`` passes False."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            path = path.rstrip("/")
            if path in ("/state", ""):
                lean = groups_optional and "groups=0" in query.split("&")
                state = get_state(groups=False) if lean else get_state()
                body, code = json.dumps(state, allow_nan=False).encode(), 200
            elif path == "/healthz":
                body, code = b'{"ok": true}', 200
            else:
                body, code = json.dumps({"error": f"no such resource {path!r}; try /state"}).encode(), 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # keep request logs out of the controller log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="tellm-api", daemon=True).start()
    return server
