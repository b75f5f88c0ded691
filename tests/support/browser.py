"""Headless Chromium driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``).

The browser reads commands on fd 3 and writes answers and events on fd 4, each message a JSON object ended by
a NUL byte (Chromium's ``--remote-debugging-pipe`` transport). That needs no websocket client and no driver
download: only Debian's ``chromium`` or ``chromium-headless-shell`` (the Makefile links one into .venv/bin).

:meth:`Browser.load` opens a URL in a fresh tab and returns what a person would care about: every console
message, uncaught exception and browser log entry (failed loads, Content-Security-Policy violations) at warning
level or above, plus a PNG screenshot of the whole page.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    """The Chromium the Makefile links into the venv, else one on PATH; a failure (not a skip) without one."""
    beside = Path(sys.executable).parent / "chromium"
    if beside.exists():
        return str(beside)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium: run `make .venv/bin/chromium` (the Makefile installs Debian's chromium-headless-shell)")


@dataclass
class Loaded:
    url: str
    problems: list[str] = field(default_factory=list)  # console errors/warnings, exceptions, log errors
    screenshot: bytes = b""
    evaluate: Any = None  # the page's answer to the ``probe`` expression


class Browser:
    def __init__(self, exe: str | None = None, *, width: int = 1100, height: int = 900) -> None:
        self._profile = tempfile.mkdtemp(prefix="rotator-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends, moved above 9 so that putting them at 3 and 4 cannot overwrite one with the other
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def fds() -> None:  # in the child, before exec: the pipe ends at the fds Chromium expects (inheritable)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [
            exe or chromium_path(),
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            "--hide-scrollbars",
            "--mute-audio",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=fds,
        )
        os.close(high_r)
        os.close(high_w)
        self._lock = threading.Condition()
        self._answers: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._next = 0
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    # ---- transport ----

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._events.append({"method": "_closed"})
                    self._lock.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._lock:
                    if "id" in msg:
                        self._answers[msg["id"]] = msg
                    else:
                        self._events.append(msg)
                    self._lock.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:  # fmt: skip
        with self._lock:
            self._next += 1
            mid = self._next
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while mid not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"Chromium did not answer {method} (exit code {self.proc.poll()})")
                self._lock.wait(left)
            answer = self._answers.pop(mid)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def wait_event(self, method: str, session: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for e in self._events:
                    if e.get("method") == method and e.get("sessionId") == session:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {method} within {timeout} s")
                self._lock.wait(left)

    # ---- what the tests use ----

    def load(self, url: str, *, probe: str | None = None, settle: float = 0.3) -> Loaded:
        """Open ``url`` in a new tab, wait for its load event, and report problems and a screenshot.

        ``probe``: a JavaScript expression evaluated in the page through DevTools (not by the page, so the
        page's own Content-Security-Policy does not apply); its JSON value lands in ``Loaded.evaluate``.
        """
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        time.sleep(settle)  # late console messages and log entries
        out = Loaded(url)
        with self._lock:
            events = [e for e in self._events if e.get("sessionId") == session]
        for e in events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                out.problems.append(f"console.{p['type']}: {text}")
            elif e["method"] == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                out.problems.append(f"exception: {details.get('exception', {}).get('description') or details}")
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                entry = p["entry"]
                out.problems.append(
                    f"log {entry.get('source')}/{entry['level']}: {entry.get('text')} {entry.get('url', '')}"
                )
        if probe is not None:
            r = self.send(
                "Runtime.evaluate", {"expression": f"JSON.stringify({probe})", "returnByValue": True}, session=session
            )
            out.evaluate = json.loads(r["result"]["value"])
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        out.screenshot = base64.b64decode(shot["data"])
        self.send("Target.closeTarget", {"targetId": target})
        return out

    def close(self) -> None:
        with contextlib.suppress(AssertionError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
