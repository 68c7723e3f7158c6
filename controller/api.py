"""Read-only HTTP JSON API: GET /state (topology, TM, MLU, link utilisation, router, last routing time).

The policy daemon and the demo read it. It serves the snapshot the control loop publishes after each
interval, so a request never touches live controller state.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_state(get_state: Callable[[], dict], port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/state", ""):
                body, code = json.dumps(get_state(), allow_nan=False).encode(), 200
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
