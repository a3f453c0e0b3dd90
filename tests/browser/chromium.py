"""Open a report in Debian's headless chromium: a screenshot, or the DOM it built, and every request
the page made.

The page is served from a loopback server that also stands as chromium's proxy for every other
host and whose DNS resolves nothing, so any request the page makes (an image, a font, a script, a
prefetch) is recorded here instead of leaving the machine. The browser gets a fresh profile in a
temporary directory (nothing in $HOME) and no background services.

As a script (`make test-browser` runs the tests; this is for looking at one report by hand):
    python tests/browser/chromium.py REPORT.html --screenshot shot.png [--dark] [--size 1200x1400]
    python tests/browser/chromium.py REPORT.html --dump-dom
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: Where Debian puts it (`apt-get install -y chromium`); PATH is searched too.
CHROMIUM = "/usr/bin/chromium"
#: The browser itself, without the Debian wrapper (which adds remote extensions and their
#: update checks, and Google API keys: background requests a test of the page must not see).
CHROMIUM_BINARY = "/usr/lib/chromium/chromium"
INSTALL_HINT = "install Debian's chromium: apt-get install -y chromium"
#: Hosts chromium itself calls at start-up whatever the flags (component updates, its clock
#: check, sign-in): refused by the test proxy like everything else, and not counted as the page's.
BROWSER_OWN_HOSTS = frozenset(
    {"update.googleapis.com", "clients2.google.com", "accounts.google.com"}
)
#: Seconds one chromium run may take (a cold start on a loaded 2-core machine is 1-3 s).
RUN_TIMEOUT = 90


def find_chromium() -> str | None:
    """The chromium binary, or None when it is not installed."""
    for path in (CHROMIUM_BINARY, CHROMIUM):
        if Path(path).exists():
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Recorder:
    """What the loopback server saw: every request line, the page's own first."""

    root: Path
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def page_requests(requests: list[str]) -> list[str]:
    """The requests a page made: all but the browser's own start-up calls to BROWSER_OWN_HOSTS."""
    return [r for r in requests if _host(r) not in BROWSER_OWN_HOSTS]


def _host(request: str) -> str:
    """`GET http://h:80/x` -> `h`; `CONNECT h:443` -> `h`; `GET /x` (the page's own) -> ``."""
    target = request.partition(" ")[2]
    if "://" in target:
        target = target.split("://", 1)[1]
    elif target.startswith("/"):
        return ""
    return target.split("/", 1)[0].rsplit(":", 1)[0]


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with recorder.lock:
                recorder.requests.append(f"{self.command} {self.path}")
            name = self.path.lstrip("/")
            page = recorder.root / name
            if self.command == "GET" and "/" not in name and page.is_file():
                body = page.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
            else:  # anything else, through the proxy or not: refused, and recorded above
                body = b"refused by the test proxy\n"
                self.send_response(502)
                self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = do_PUT = do_OPTIONS = do_CONNECT = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serving(root: Path) -> Iterator[tuple[str, Recorder]]:
    """A loopback server for the pages in `root` that records every request; (base URL, log)."""
    recorder = Recorder(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()


def run_chromium(url: str, proxy: str, *args: str, dark: bool = False) -> str:
    """Run headless chromium on `url` with the given action flags; its stdout."""
    binary = find_chromium()
    if binary is None:
        raise RuntimeError(f"chromium not found: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="parallelize-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",  # root in a container: the sandbox needs namespaces it may not have
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-client-side-phishing-detection",
            "--disable-domain-reliability",
            "--disable-breakpad",
            "--no-pings",
            "--no-service-autorun",
            "--safebrowsing-disable-auto-update",
            "--metrics-recording-only",
            "--allow-pre-commit-input",
            "--disable-features=Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions",
            f"--user-data-dir={profile}",
            f"--proxy-server={proxy}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--blink-settings=preferredColorScheme={0 if dark else 1}",
            *args,
            url,
        ]
        if dark:
            command.insert(1, "--force-dark-mode")
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env={"PATH": "/usr/bin:/bin", "HOME": profile, "LANG": "C.UTF-8"},
            check=False,
        )
    if run.returncode != 0:
        raise RuntimeError(f"chromium exited {run.returncode}: {run.stderr[-2000:]}")
    return run.stdout


def dump_dom(page: Path) -> tuple[str, list[str]]:
    """The DOM chromium built from `page`, and every request it made."""
    with serving(page.parent) as (base, recorder):
        dom = run_chromium(f"{base}/{page.name}", base, "--dump-dom")
        return dom, list(recorder.requests)


def screenshot(
    page: Path, out: Path, *, width: int = 1200, height: int = 1400, dark: bool = False
) -> list[str]:
    """A PNG of `page` at width x height; every request chromium made for it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with serving(page.parent) as (base, recorder):
        run_chromium(
            f"{base}/{page.name}",
            base,
            f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}",
            dark=dark,
        )
        return list(recorder.requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="an HTML report")
    parser.add_argument("--screenshot", type=Path, help="write a PNG here")
    parser.add_argument("--dump-dom", action="store_true", help="print the DOM chromium built")
    parser.add_argument("--dark", action="store_true", help="prefers-color-scheme: dark")
    parser.add_argument("--size", default="1200x1400", help="WIDTHxHEIGHT of the window")
    options = parser.parse_args()
    if find_chromium() is None:
        print(f"chromium not found: {INSTALL_HINT}", file=sys.stderr)
        return 2
    page = options.page.resolve()
    if options.screenshot:
        width, height = (int(n) for n in options.size.split("x"))
        requests = screenshot(
            page, options.screenshot, width=width, height=height, dark=options.dark
        )
    else:
        dom, requests = dump_dom(page)
        print(dom)
    print(f"requests by the page: {page_requests(requests)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
