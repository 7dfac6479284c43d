"""A model server that misbehaves on cue: a plain HTTP proxy in front of the real vLLM that hangs
up on every request once `down()` says so (what a crashed or restarting server looks like to
the client: the connection closes with no answer), or that is slow to answer chat completions
(an overloaded server: every reply takes at least `reply_delay` seconds)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@contextmanager
def model_server_proxy(
    *, upstream: str, down: Callable[[], bool] = lambda: False, reply_delay: float = 0.0
) -> Iterator[str]:
    """Yields the proxy's base URL; requests go to `upstream` until `down()` is true."""
    closed = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if down():
                self.close_connection = True  # no answer at all: the client sees the server gone
                return
            if self.path.startswith("/v1/chat/completions") and closed.wait(reply_delay):
                return  # the proxy was closed meanwhile: nothing more goes to the real server
            try:
                response = httpx.request(
                    self.command,
                    upstream + self.path,
                    content=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                    timeout=600,
                )
            except httpx.HTTPError:  # the real server went away (the test session is ending)
                self.close_connection = True
                return
            try:
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)
            except OSError:  # the client gave up waiting (its timeout)
                self.close_connection = True

        do_GET = do_POST = forward

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        closed.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
