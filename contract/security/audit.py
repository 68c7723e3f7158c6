"""The audit trail of admin calls (ReloadModel, SetPolicy): who, what, result.

Every admin call, accepted or refused, is one WARNING line in the server's log and, with a file,
one JSON line appended to it::

    {"time": "2026-01-01T12:00:00Z", "timestamp": 1767268800.0, "who": "token:ops", "peer":
     "ipv4:10.0.0.7:51234", "method": "ReloadModel", "what": {"model_path": "b.onnx"},
     "result": "refused: /etc/shadow is outside the model directory /models"}

``who`` is the authenticated caller (``token:<name>`` or ``cert:<subject>``) when authentication
is on, else the peer address. Long strings are cut to ``MAX_FIELD_CHARS`` so that a caller cannot
grow the log by sending large fields.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tellm.audit")

MAX_FIELD_CHARS = 256

#: The authenticated identity of the call being handled (set by the auth interceptor).
CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("tellm_caller", default=None)


def caller(context) -> str:
    """Who makes this call: the authenticated identity, else the peer address."""
    who = CALLER.get()
    if who:
        return who
    try:
        return f"peer:{context.peer()}"
    except Exception:  # noqa: BLE001 - a context without a peer (in-process use)
        return "peer:unknown"


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + f"...(+{len(value) - MAX_FIELD_CHARS})"
    if isinstance(value, dict):
        return {_clip(str(k)): _clip(v) for k, v in list(value.items())[:32]}
    if isinstance(value, (list, tuple)):
        return [_clip(v) for v in value[:32]]
    return value


class AdminAudit:
    """Appends one line per admin call; thread-safe. ``path=None``: the log line only."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(mode=0o600, exist_ok=True)

    def record(self, context, method: str, what: dict, result: str) -> dict:
        who = caller(context)
        try:
            peer = context.peer()
        except Exception:  # noqa: BLE001
            peer = "unknown"
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "timestamp": time.time(),
                 "who": _clip(who), "peer": _clip(peer), "method": method, "what": _clip(what),
                 "result": _clip(result)}
        log.warning("admin call %s by %s (%s): %s -> %s", method, entry["who"], entry["peer"],
                    json.dumps(entry["what"], default=str), entry["result"])
        if self.path:
            line = json.dumps(entry, default=str) + "\n"
            with self._lock, self.path.open("a") as f:
                f.write(line)
        return entry

    def read(self) -> list[dict]:
        if not self.path or not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
