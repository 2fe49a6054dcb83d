"""Drive Debian's headless chromium over the DevTools protocol, with the standard library only.

:func:`browser` starts chromium on 127.0.0.1 with an empty profile, every background
connection off, and stops it (and only it) when the block exits. :class:`Page` speaks CDP
over a minimal RFC 6455 websocket client: navigate, evaluate JS (awaiting promises), wait
for a condition, take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = [
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--no-sandbox",  # tests may run as root in CI containers
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--enable-unsafe-swiftshader",  # WebGL in software, for the 3-D viewer
    "--use-angle=swiftshader",
]


class BrowserError(RuntimeError):
    pass


class _WebSocket:
    """Just enough of RFC 6455 for CDP: masked text frames out, text frames in."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        m = re.fullmatch(r"ws://([^/:]+):(\d+)(/.*)", url)
        if not m:
            raise BrowserError(f"unexpected websocket URL {url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("the browser closed the websocket handshake")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise BrowserError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise BrowserError("the browser closed the websocket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack(">BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack(">BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack(">BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            op = b0 & 0x0F
            if op == 0x8:
                raise BrowserError("the browser closed the websocket")
            if op == 0x9:  # ping
                continue
            if op in (0x1, 0x0, 0x2):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Page:
    """One tab, driven over CDP."""

    def __init__(self, ws_url: str) -> None:
        self.ws = _WebSocket(ws_url)
        self.next_id = 0
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self.requests: list[str] = []  # every URL the page asked for
        self.call("Runtime.enable")
        self.call("Network.enable")
        self.call("Page.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"{params['type']}: {args}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.exceptions.append(str(d.get("exception", {}).get("description", d.get("text"))))

    def goto(self, url: str, wait: float = 30.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=wait)

    def eval(self, expression: str) -> Any:
        r = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll until ``expression`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"timed out waiting for {expression!r}; console: {self.console[-5:]}, "
                    f"exceptions: {self.exceptions[-5:]}"
                )
            time.sleep(0.1)

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in an ``<input type=file>`` as a user would."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def text(self, selector: str) -> str:
        return str(self.eval(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''"))

    def screenshot(self, path: Path, width: int = 1280, height: int = 900) -> Path:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        full = self.eval("document.documentElement.scrollHeight")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=min(int(full or height), 4000),
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.ws.close()


class Browser:
    def __init__(self, port: int) -> None:
        self.port = port
        self.pages: list[Page] = []

    def page(self) -> Page:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            info = json.loads(r.read())
        page = Page(info["webSocketDebuggerUrl"])
        self.pages.append(page)
        return page


@contextlib.contextmanager
def browser(*extra_flags: str) -> Iterator[Browser]:
    """Headless chromium on loopback with an empty profile; stopped when the block exits."""
    if CHROMIUM is None:
        raise BrowserError("chromium is not installed")
    profile = tempfile.mkdtemp(prefix="foldnet-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, *extra_flags, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: stopped with every child it forks
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:  # reads chromium's stderr to the end, so it never blocks on it
        for raw in stderr:
            lines.append(raw.decode(errors="replace"))
            if "DevTools listening on" in lines[-1]:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not found.wait(60):
            raise BrowserError("chromium did not start: " + "".join(lines[-20:]))
        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", "".join(lines))
        if not m:
            raise BrowserError("chromium is not listening on 127.0.0.1: " + "".join(lines[-5:]))
        b = Browser(int(m.group(1)))
        try:
            yield b
        finally:
            for p in b.pages:
                p.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        reader.join(10)
        stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
