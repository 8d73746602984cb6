"""A loopback chat-completions server for the pipeline tests (no network beyond 127.0.0.1)."""
from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "sk-test-SECRET-4242"
ENV = "AVCOT_TEST_KEY"


def free_port() -> int:
    """A loopback port nobody listens on right now (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # a client that timed out closed its socket before the reply: expected in the timeout tests
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeServer:
    """Chat-completions on 127.0.0.1: canned replies, auth check, scripted failures, request log."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict] = []
        self.failures: list[int] = []
        self.retry_after = "0"
        """Retry-After header sent with scripted failures ('' sends none)."""
        self.replies: list[str] = []
        self.default_reply = "ok"
        self.stamps: list[float] = []
        self.echo_error = False
        self.delay = 0.0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                server.stamps.append(time.monotonic())
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                        "body": body})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._send(401, {"error": "bad key"})
                if server.echo_error:
                    return self._send(400, {"error": f"bad request from {self.headers['Authorization']}"})
                if server.failures:
                    code = server.failures.pop(0)
                    headers = {"Retry-After": server.retry_after} if server.retry_after else {}
                    return self._send(code, {"error": f"scripted {code}"}, headers)
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay)
                with server.lock:
                    server.in_flight -= 1
                reply = server.replies.pop(0) if server.replies else server.default_reply
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": reply}}]})

        self.httpd = _QuietServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
