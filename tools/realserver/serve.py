#!/usr/bin/env python3
"""Start the real `llama-server` built by build.sh (stdlib only).

As a library (the integration tests)::

    from serve import find_build, start_server
    binary, model = find_build()          # None if build.sh has not run
    with start_server(binary, model, slots=8) as srv:
        print(srv.base_url)               # http://127.0.0.1:PORT/v1

As a script: ``python tools/realserver/serve.py [--slots 8] [--port 8089]``
prints the base URL and serves until Ctrl-C. ``--usable`` (what ``make
serve-real`` runs, through ``start_usable``) serves a window parallelize's
own defaults fit: 4 slots x 8,192 tokens, replies up to 1,024 tokens, on
port 8089, and prints the ``export OPENAI_BASE_URL=...`` line.

The server flags work around rough edges measured on a 2-core box:
``-t 1 -tb 1`` (2 compute threads collapse to 15-20 s per request under CPU
contention), ``--threads-http 128`` (the default n_parallel+4 HTTP threads
make bursts come back in 5 s keep-alive waves), ``--jinja`` (use the ChatML
template embedded in the model), ``-c`` = slots * ctx_per_slot (``-c`` is the
TOTAL context, split over the slots), ``-n 256`` (cap when no max_tokens).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ALIAS = "tiny-llama"

#: `make serve-real` (--usable): a server parallelize's defaults work with out of the box. Its
#: context window is read per slot from /props, so each slot holds a default chunk plus the
#: 1,024 tokens it reserves for a reply (and the reply cap is that same 1,024, not 256); four
#: slots serve four chunks at once; a fixed port keeps the export line the same every time.
USABLE_SLOTS = 4
USABLE_CTX_PER_SLOT = 8192
USABLE_REPLY_TOKENS = 1024
USABLE_PORT = 8089
#: llama-server's cap on a reply when a request sets no max_tokens (the tests' server).
REPLY_TOKENS = 256


def cache_root() -> Path:
    """$PARALLELIZE_REALSERVER_DIR, else $XDG_CACHE_HOME/parallelize/realserver (as build.sh)."""
    env = os.environ.get("PARALLELIZE_REALSERVER_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "parallelize" / "realserver"


def find_build(root: Path | None = None) -> tuple[Path, Path] | None:
    """(binary, model) recorded by the last successful build.sh run, or None."""
    try:
        info = json.loads(((root or cache_root()) / "build.json").read_text())
        binary, model = Path(info["binary"]), Path(info["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if os.access(binary, os.X_OK) and model.is_file():
        return binary, model
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _die_with_parent() -> None:
    # Linux: SIGTERM the server if the process that started it dies (e.g. a
    # killed pytest), so no stray llama-server keeps a port. Note: "parent" is
    # the starting *thread*; start servers from a long-lived thread.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # best effort: not Linux, or no libc symbol
        pass


# urllib would otherwise honour HTTP(S)_PROXY even for 127.0.0.1
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RunningServer:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, alias: str):
        self.process = process
        self.port = port
        self.log_path = log_path
        self.alias = alias
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"

    def get_json(self, path: str, timeout: float = 5.0):
        with _OPENER.open(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer({self.base_url}, pid={self.process.pid}, log={self.log_path})"


def _start_once(
    binary, model, slots, ctx_per_slot, port, threads, alias, log_path, wait,
    reply_tokens=REPLY_TOKENS,
):  # fmt: skip
    """The RunningServer once /v1/models answers (200 only after the model loaded),
    or a dead one if the process exited; raises on timeout."""
    cmd = [str(binary), "-m", str(model), "--alias", alias, "--host", "127.0.0.1"]
    cmd += f"--port {port} -t {threads} -tb {threads} -np {slots}".split()
    cmd += f"-c {slots * ctx_per_slot} -n {reply_tokens} --threads-http 128".split()
    cmd += ["--jinja", "--metrics"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    srv = RunningServer(proc, port, log_path, alias)
    deadline = time.monotonic() + wait
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            srv.get_json("/v1/models", timeout=2)
            return srv
        except (OSError, ValueError):  # refused, or HTTP 503 while loading
            time.sleep(0.05)
    if proc.poll() is not None:
        return srv
    srv.stop()
    raise RuntimeError(
        f"llama-server not ready after {wait:.0f} s: {' '.join(cmd)}\n"
        f"--- {log_path}:\n{_tail(log_path)}"
    )


def start_server(
    binary, model, *, slots: int = 8, ctx_per_slot: int = 512, port: int = 0,
    threads: int = 1, alias: str = ALIAS, log_path=None, wait: float = 60.0,
    reply_tokens: int = REPLY_TOKENS,
) -> RunningServer:  # fmt: skip
    """Start llama-server on 127.0.0.1 and wait (up to `wait` s) for /v1/models.

    port=0 picks a free port (retried if another process grabs it first).
    The log goes to `log_path` (default: a new temp file, kept for debugging).
    Raises RuntimeError with the log tail if the server dies or never answers.
    """
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        os.close(fd)
    log_path = Path(log_path)
    for _ in range(3 if port == 0 else 1):
        srv = _start_once(
            binary, model, slots, ctx_per_slot, port or _free_port(), threads, alias, log_path,
            wait, reply_tokens,
        )  # fmt: skip
        if srv.alive():
            return srv
        if b"couldn't bind" not in log_path.read_bytes():
            break
    raise RuntimeError(
        f"llama-server exited with rc={srv.process.returncode}\n--- {log_path}:\n{_tail(log_path)}"
    )


def start_usable(
    binary=None, model=None, *, slots: int = USABLE_SLOTS,
    ctx_per_slot: int = USABLE_CTX_PER_SLOT, reply_tokens: int = USABLE_REPLY_TOKENS,
    port: int = USABLE_PORT, threads: int = 1, wait: float = 120.0,
) -> RunningServer:  # fmt: skip
    """`make serve-real`: the built server (or `binary`/`model`) with a usable window.

    Raises RuntimeError when there is no build, or the server does not come up.
    """
    if binary is None or model is None:
        found = find_build()
        if found is None:
            raise RuntimeError("no build found: run tools/realserver/build.sh first")
        binary, model = binary or found[0], model or found[1]
    return start_server(
        binary, model, slots=slots, ctx_per_slot=ctx_per_slot, port=port, threads=threads,
        reply_tokens=reply_tokens, wait=wait,
    )  # fmt: skip


def export_line(srv: RunningServer) -> str:
    """What `make serve-real` tells the user to paste into their shell."""
    return f"export OPENAI_BASE_URL={srv.base_url}"


def _start(a: argparse.Namespace, binary: Path, model: Path) -> RunningServer:
    """The server main() was asked for: --usable sizes, or the tests' ones (8 x 512, -n 256)."""
    if a.usable:
        return start_usable(
            binary, model, slots=a.slots or USABLE_SLOTS,
            ctx_per_slot=a.ctx_per_slot or USABLE_CTX_PER_SLOT,
            reply_tokens=a.reply_tokens or USABLE_REPLY_TOKENS,
            port=USABLE_PORT if a.port is None else a.port, threads=a.threads,
        )  # fmt: skip
    return start_server(
        binary, model, slots=a.slots or 8, ctx_per_slot=a.ctx_per_slot or 512,
        port=a.port or 0, threads=a.threads, reply_tokens=a.reply_tokens or REPLY_TOKENS,
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description="Serve the tiny model with llama-server.")
    ap.add_argument("--slots", type=int, default=None, help="default 8 (--usable: 4)")
    ap.add_argument("--ctx-per-slot", type=int, default=None, help="default 512 (--usable: 8192)")
    ap.add_argument("--port", type=int, default=None, help="default free (--usable: 8089)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--binary", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--reply-tokens", type=int, default=None, help="default 256 (--usable: 1024)")
    ap.add_argument(
        "--usable", action="store_true", help="the window parallelize's defaults need (serve-real)"
    )
    a = ap.parse_args()
    found = find_build()
    if not (a.binary and a.model) and found is None:
        print("no build found: run tools/realserver/build.sh first", file=sys.stderr)
        return 1
    binary = a.binary or found[0]
    model = a.model or found[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill PID` stops the server too
    t0 = time.monotonic()
    try:
        srv = _start(a, binary, model)
    except RuntimeError as exc:
        print(f"{exc}\n(another server on the port? pass --port N)", file=sys.stderr)
        return 1
    with srv:
        print(
            f"{srv.base_url}  (model {srv.alias}, ready in {time.monotonic() - t0:.2f} s, "
            f"pid {srv.process.pid}, log {srv.log_path})",
            flush=True,
        )
        if a.usable:
            print(f"Ctrl-C stops it. In another shell:\n\n    {export_line(srv)}\n", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            srv.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
