"""A scripted OpenAI-compatible chat-completions server on loopback for the LLM policy engine's tests
(real HTTP, real tool-call JSON), and builders of the tool-call messages it answers with."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedLLM:
    """Answers each POST /v1/chat/completions with the next scripted step: a message dict, or
    ("sleep", seconds), or ("raw", status, text). Records every request body."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                step = outer.steps.pop(0) if outer.steps else {"role": "assistant", "content": "done"}
                status, text = 200, None
                if isinstance(step, tuple) and step[0] == "sleep":
                    time.sleep(step[1])
                    step = {"role": "assistant", "content": "too late"}
                if isinstance(step, tuple) and step[0] == "raw":
                    status, text = step[1], step[2]
                if self.path != "/v1/chat/completions":
                    status, text = 404, "not found"
                if text is None:
                    text = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                       "choices": [{"index": 0, "message": step,
                                                    "finish_reason": "tool_calls" if step.get("tool_calls") else "stop"}]})
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def call(name, args, id_="c1", raw_args=None):
    return {"id": id_, "type": "function",
            "function": {"name": name, "arguments": raw_args if raw_args is not None else json.dumps(args)}}


def tool_msg(*calls, content=None):
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}
