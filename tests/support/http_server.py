"""A real threaded HTTP server on 127.0.0.1 for download tests, with switches for the failures
downloads meet in the wild.

    with FileServer({"/a.zip": data}, drop_after=1000) as server:
        fetch(server.url("/a.zip"), ...)
        server.requests  # [(path, {header: value}, status), ...] in arrival order

Switches (attributes, changeable while it runs):
- range_support: honour `Range: bytes=N-[M]` with 206 / 416 (False: ignore it and send 200 + all);
- drop_after: send the headers of a full response, then only this many body bytes and close the
  connection, once (the next request is served normally);
- fail_first: answer the first K requests with 503;
- stall_after: like drop_after, but wait `stall_seconds` before closing (a client read timeout).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files: dict[str, bytes], *, range_support: bool = True, drop_after: int | None = None,
                 fail_first: int = 0, stall_after: int | None = None, stall_seconds: float = 2.0):
        self.files = dict(files)
        self.range_support = range_support
        self.drop_after = drop_after
        self.fail_first = fail_first
        self.stall_after = stall_after
        self.stall_seconds = stall_seconds
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # --- lifecycle ---
    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def range_headers(self) -> list[str | None]:
        """The Range header of each request so far (None where there was none)."""
        return [headers.get("Range") for _, headers, _ in self.requests]

    # --- request handling ---
    def _decide(self, path: str, headers: dict[str, str]):
        """Under the lock: what to do with this request, consuming one-shot switches."""
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                action = ("fail", None)
            elif self.drop_after is not None:
                action, self.drop_after = ("drop", self.drop_after), None
            elif self.stall_after is not None:
                action, self.stall_after = ("stall", self.stall_after), None
            else:
                action = ("serve", None)
            return action

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _record(self, status: int) -> None:
                with server._lock:
                    server.requests.append((self.path, dict(self.headers.items()), status))

            def _simple(self, status: int, body: bytes = b"", extra: dict | None = None) -> None:
                self._record(status)
                self.send_response(status)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                action, n = server._decide(self.path, dict(self.headers.items()))
                if action == "fail":
                    return self._simple(503, b"try again later\n")
                data = server.files.get(self.path)
                if data is None:
                    return self._simple(404, b"not found\n")
                status, start, end = 200, 0, len(data)
                headers = {"Content-Type": "application/octet-stream"}
                if server.range_support:
                    headers["Accept-Ranges"] = "bytes"
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                    if m:
                        start = int(m.group(1))
                        if start >= len(data):
                            return self._simple(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                        end = min(int(m.group(2)) + 1, len(data)) if m.group(2) else len(data)
                        status = 206
                        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                body = data[start:end]
                self._record(status)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if action in ("drop", "stall"):
                    return _cut_short(self, body[:n], server.stall_seconds if action == "stall" else None)
                self.wfile.write(body)

        return Handler


def _cut_short(handler: BaseHTTPRequestHandler, sent: bytes, wait_seconds: float | None) -> None:
    """Send only `sent` of a body whose full length was announced, wait if told to (a stall), then close the
    connection: the client sees a download that breaks off."""
    handler.wfile.write(sent)
    handler.wfile.flush()
    if wait_seconds is not None:
        time.sleep(wait_seconds)
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
