"""A loopback chat-completions server for the pipeline tests (no network beyond 127.0.0.1)."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from email.parser import BytesParser
from email.policy import HTTP
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
        self.transcript = "我们明天去实验室"
        """Text of every /v1/audio/transcriptions reply (one segment per 2 s of audio, see `segments`)."""
        self.segments: list[dict] | None = None
        """Segments of the transcription reply; None sends none."""
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
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                multipart = self.path == "/v1/audio/transcriptions"
                body = multipart_form(self.headers["Content-Type"], raw) if multipart else json.loads(raw)
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                        "body": body})
                if multipart and self.headers.get("Authorization") == f"Bearer {KEY}" and not server.failures:
                    reply = {"text": server.transcript}
                    return self._send(200, reply if server.segments is None else {**reply, "segments": server.segments})
                if self.path not in ("/v1/chat/completions", "/v1/audio/transcriptions"):
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


def multipart_form(content_type: str, raw: bytes) -> dict:
    """A multipart/form-data body as {field: str, or (filename, content type, bytes) for files}."""
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    form: dict = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        filename = part.get_filename()
        form[name] = (filename, part.get_content_type(), data) if filename else data.decode()
    return form


class RecordingProxy:
    """A loopback pass-through in front of a real server: forwards each POST unchanged, keeps its JSON
    body and the status the real server answered, so a test can check what went over the wire."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                req = urllib.request.Request(self.target_url(), data=raw, method="POST",
                                             headers={"Content-Type": self.headers["Content-Type"]})
                try:
                    with urllib.request.urlopen(req, timeout=120) as resp:
                        status, out = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, out = exc.code, exc.read()
                proxy.requests.append({"path": self.path, "body": json.loads(raw), "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def target_url(self) -> str:
                return proxy.target + self.path

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
