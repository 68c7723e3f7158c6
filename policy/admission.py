"""Server-side limits of PolicyService: request sizes, a change rate per topology, and the policy
state file as an append-only journal.

The policy daemon's guardrails (guard.py) only bind callers that go through it; these bind every
caller of SetPolicy. ``ChangeLimiter`` admits at most ``max_changes`` changes per topology in any
``window_seconds``; ``PolicyJournal`` persists each change as one appended JSON line (O(1) per
change, no lock shared with the Route path) and compacts the file by atomic rename once it holds
more superseded lines than live ones.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger(__name__)

MAX_TOPOLOGY_ID_CHARS = 256
MAX_REASON_CHARS = 1024
MAX_ACTOR_CHARS = 128
#: Topologies that may hold a policy of their own (the default "" included).
MAX_POLICY_TOPOLOGIES = 1024
#: Past policies kept per topology (newest last).
HISTORY_LIMIT = 32


class RateLimited(Exception):
    """A change refused by the per-topology rate limit (the message says when the next may come)."""


def check_sizes(topology_id: str, reason: str, actor: str) -> str | None:
    """The first field longer than its limit, as a message; None when all fit."""
    for name, value, limit in (("topology_id", topology_id, MAX_TOPOLOGY_ID_CHARS),
                               ("reason", reason, MAX_REASON_CHARS), ("actor", actor, MAX_ACTOR_CHARS)):
        if len(value) > limit:
            return f"{name} has {len(value)} characters, at most {limit} are accepted"
    return None


@dataclass(frozen=True)
class LimitConfig:
    max_changes: int = 10
    window_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_changes < 1 or not self.window_seconds >= 0:
            raise ValueError("the policy rate limit needs max_changes >= 1 and window_seconds >= 0")


class ChangeLimiter:
    """At most ``max_changes`` per topology in any ``window_seconds`` (sliding window); thread-safe."""

    def __init__(self, config: LimitConfig = LimitConfig(), clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_POLICY_TOPOLOGIES):
        self.config = config
        self.clock = clock
        self.max_keys = max_keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, topology_id: str) -> None:
        """Count one change for ``topology_id`` or raise RateLimited (nothing counted)."""
        c = self.config
        now = self.clock()
        with self._lock:
            times = self._times.get(topology_id)
            if times is None:
                times = self._times[topology_id] = deque(maxlen=c.max_changes)
                while len(self._times) > self.max_keys:
                    self._times.popitem(last=False)
            self._times.move_to_end(topology_id)
            if len(times) == c.max_changes and now - times[0] < c.window_seconds:
                wait = c.window_seconds - (now - times[0])
                raise RateLimited(f"rate limit: at most {c.max_changes} policy changes per {c.window_seconds:g} s "
                                  f"for topology {topology_id or '<default>'!r}; the next is allowed in {wait:.1f} s")
            times.append(now)


class PolicyJournal:
    """The policy state file: one JSON line per change, the highest version per topology wins.

    A legacy state file (one JSON document ``{"policies": {...}}``) is read too and rewritten as a
    journal at the first compaction. Torn or damaged lines are skipped with one log line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._lines = 0
        self._live = 0
        self._fh = None

    def load(self) -> dict[str, dict]:
        """topology id -> the newest change recorded for it (AppliedPolicy.to_dict layout)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("policies"), dict):  # the legacy single document
            newest = {str(k): v for k, v in doc["policies"].items() if isinstance(v, dict)}
            self._lines = self._live = len(newest)
            return newest
        newest, damaged = {}, 0
        lines = text.splitlines()
        for line in lines:
            try:
                d = json.loads(line)
                tid, version = d["topology_id"], int(d["version"])
                if not isinstance(tid, str):
                    raise TypeError("topology_id")
            except (ValueError, KeyError, TypeError):
                damaged += bool(line.strip())
                continue
            if tid not in newest or version >= int(newest[tid]["version"]):
                newest[tid] = d
        if damaged:
            log.error("policy state file %s: %d damaged line(s) skipped", self.path, damaged)
        self._lines, self._live = len(lines), len(newest)
        return newest

    def append(self, entry: dict, live: int, snapshot: Callable[[], Iterable[dict]]) -> None:
        """Record one change; ``live`` is the number of topologies with a policy now, ``snapshot``
        gives their current entries when the file is compacted."""
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock:
            self._live = live
            if self._lines >= 2 * self._live + 64:
                self._compact(snapshot())
            if self._fh is None:
                self._fh = self.path.open("a")
            self._fh.write(line)
            self._fh.flush()
            self._lines += 1

    def _compact(self, entries: Iterable[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            n = 0
            for e in entries:
                f.write(json.dumps(e, separators=(",", ":")) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._lines = n

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
