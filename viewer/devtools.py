"""Headless Chromium driven through the DevTools protocol (a websocket): how the viewer's browser
test (``tests/test_viewer.py``) and ``benchmarks/viewer_browser.py`` see ``studio view`` as a user
does. ``chromium --screenshot`` does not wait for viser's websocket scene, hence the protocol.
Needs Debian's ``chromium`` (``CHROMIUM``) and the ``websockets`` package.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

CHROMIUM = Path("/usr/bin/chromium")


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> int:
    """Wait until ``url`` answers (the HTTP status) while the server process ``proc`` runs; a
    RuntimeError if it exits first or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited (code {proc.returncode}) before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return resp.status
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class DevTools:
    """Minimal Chrome DevTools protocol client over a page target's websocket."""

    def __init__(self, ws):
        self._ws = ws
        self._next_id = 0
        self._events: list[str] = []

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message["result"]
            if "method" in message:
                self._events.append(message["method"])

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait for its load event."""
        self.call("Page.enable")
        self._events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while "Page.loadEventFired" not in self._events:
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if "method" in message:
                self._events.append(message["method"])


@contextlib.contextmanager
def headless_chromium(width: int = 800, height: int = 600) -> Iterator["DevTools"]:
    """Headless Chromium with remote debugging; yields a DevTools client of its blank page."""
    from websockets.sync.client import connect

    # Chromium's helper processes can still be writing to the profile as it is removed
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-unsafe-swiftshader",  # software WebGL, which viser's canvas needs
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        proc = subprocess.Popen(
            [str(CHROMIUM), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 20.0
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("Chromium did not start")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5) as resp:
                page = next(t for t in json.load(resp) if t["type"] == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
                yield DevTools(ws)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # helpers (renderer, GPU, crash handler) in its session
