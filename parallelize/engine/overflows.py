"""Requests a server refused as longer than its context window, remembered across runs.

A healed chunk is re-planned the same way on a re-run, so its first request would be sent again
and refused again: this memory answers it instead, and only the parts' requests (which the call
cache keeps) are looked up. It lives beside the call cache, so `--no-cache` remembers nothing,
`--refresh` asks again and `cache clear` forgets. A refusal is remembered for OVERFLOW_TTL, as
long as the window it was measured against (a server restarted with a larger window is tried
again the next day). One JSON line per refusal, appended: readable by its owner only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from .facts import FACTS_TTL

#: The file beside the call cache.
OVERFLOW_FILE = "overflows.jsonl"
#: Seconds a refusal is remembered: as long as the endpoint's facts (engine.facts.FACTS_TTL).
OVERFLOW_TTL = FACTS_TTL


class OverflowMemory:
    """Request keys the server refused as too long, with the server's message."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory).expanduser() / OVERFLOW_FILE
        self._lock = threading.Lock()
        self._known: dict[str, str] | None = None

    def recall(self, keys: list[str]) -> dict[str, str]:
        """The remembered refusals among `keys`: key -> the server's message."""
        known = self._load()
        return {key: known[key] for key in keys if key in known}

    def remember(self, key: str, message: str) -> None:
        """Keep a refusal; a memory that cannot be written only costs a repeated request."""
        known = self._load()
        with self._lock:
            if known.get(key) == message:
                return
            known[key] = message
            entry = {"key": key, "error": message, "at": round(time.time())}
            line = json.dumps(entry, ensure_ascii=False) + "\n"
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
                try:
                    os.write(fd, line.encode("utf-8", "surrogatepass"))
                finally:
                    os.close(fd)
            except OSError:
                pass

    def _load(self) -> dict[str, str]:
        with self._lock:
            if self._known is None:
                self._known = {}
                try:
                    lines = self.path.read_text(encoding="utf-8").splitlines()
                except (OSError, UnicodeDecodeError):
                    lines = []
                fresh = time.time() - OVERFLOW_TTL
                for line in lines:
                    try:
                        entry = json.loads(line)
                        if float(entry.get("at", 0)) >= fresh:
                            self._known[str(entry["key"])] = str(entry["error"])
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue  # a torn, foreign or stale line: ignored
            return self._known

    def forget(self) -> None:
        """Forget every refusal (`cache clear`)."""
        with self._lock:
            self._known = {}
            self.path.unlink(missing_ok=True)
