"""Real receivers on loopback for what Pulse delivers, counting it themselves:
a webhook endpoint that verifies signatures with the Standard Webhooks
reference library, and an SMTP server process (aiosmtpd) writing a Maildir.

The demo shows what arrived through them, and the tests trust what arrived,
not what the dispatcher says it sent. aiosmtpd is a development dependency
(installed by scripts/bootstrap).
"""

from __future__ import annotations

import contextlib
import email.message
import email.parser
import email.policy
import json
import mailbox
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, Self

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    # A dispatcher opens dozens of connections at once; socketserver's backlog
    # of 5 would drop the rest, to be tried again after a second (TCP's SYN
    # retransmission), past their timeouts.
    request_queue_size = 128


class _LoopbackServer:
    """A threaded HTTP server on a free loopback port, for the receivers below."""

    path = ""

    def _listen(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class WebhookReceiver(_LoopbackServer):
    """An HTTP endpoint that verifies every request with the Standard Webhooks
    reference library (not Pulse's code) and answers with ``statuses`` in turn,
    then 200. ``accepted`` counts 2xx answers per ``webhook-id``. Each answer
    takes ``delay_s`` (seconds, or a function giving them per request)."""

    def __init__(
        self,
        secret: str,
        statuses: list[int] | None = None,
        delay_s: float | Callable[[], float] = 0.0,
    ) -> None:
        self.secret = secret
        self.delay_s = delay_s
        self.script = list(statuses or [])
        self.requests: list[dict[str, Any]] = []
        self.accepted: Counter[str] = Counter()
        self.bad_signatures = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # cut short: the sender died mid-request, nobody to answer
                headers = {k.lower(): v for k, v in self.headers.items()}
                delay = receiver.delay_s() if callable(receiver.delay_s) else receiver.delay_s
                if delay:
                    time.sleep(delay)  # a receiver that takes its time
                status = receiver._answer(self.path, headers, body)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}" if status < 400 else b"no")

        self._listen(Handler)

    path = "/hooks"

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            try:
                data = Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError:
                self.bad_signatures += 1
                self.requests.append({"path": path, "headers": headers, "status": 401})
                return 401
            status = self.script.pop(0) if self.script else 200
            self.requests.append({"path": path, "headers": headers, "body": data, "status": status})
            if 200 <= status < 300:
                self.accepted[headers["webhook-id"]] += 1
            return status

    def accepted_ids(self) -> set[str]:
        with self._lock:
            return set(self.accepted)

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r["body"] for r in self.requests if 200 <= r["status"] < 300]


class SmtpSink:
    """A real SMTP server in its own process (aiosmtpd with its Mailbox
    handler) writing every accepted message to a Maildir the test reads."""

    def __init__(self, directory: Path) -> None:
        self.maildir = directory / "maildir"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._log = open(directory / "smtpd.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{self.port}",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                str(self.maildir),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", self.port))
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the SMTP server did not start: {self._log.name}")

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
        self._log.close()

    def messages(self) -> list[email.message.EmailMessage]:
        if not self.maildir.exists():
            return []
        box = mailbox.Maildir(self.maildir, factory=None, create=False)
        parser = email.parser.BytesParser(policy=email.policy.default)
        return [
            parser.parsebytes(box.get_bytes(key))  # type: ignore[misc]
            for key in sorted(box.keys())  # by delivery second, not exact arrival order
        ]


class Reply(NamedTuple):
    """A scripted answer of a RecordingServer: a status, a body and headers."""

    status: int
    body: bytes = b"{}"
    headers: dict[str, str] = {}


class RecordingServer(_LoopbackServer):
    """An HTTP server that records every request (path, headers, form or JSON
    body) and answers with ``statuses`` in turn (a status, or a ``Reply`` with
    its body and headers), then 201: a stand-in for an SMS or push provider's
    API, run for real on loopback."""

    def __init__(self, statuses: Sequence[int | Reply] = ()) -> None:
        self.script = [r if isinstance(r, Reply) else Reply(r) for r in statuses]
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with recorder._lock:
                    reply = recorder.script.pop(0) if recorder.script else Reply(201)
                    recorder.requests.append(
                        {"path": self.path, "headers": headers, "body": raw, "status": reply.status}
                    )
                self.send_response(reply.status)
                for name, value in {"content-type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        self._listen(Handler)

    def forms(self) -> list[dict[str, str]]:
        """The form bodies of the requests answered 2xx, in order."""
        with self._lock:
            return [
                {k: v[0] for k, v in urllib.parse.parse_qs(r["body"].decode()).items()}
                for r in self.requests
                if 200 <= r["status"] < 300
            ]

    def jsons(self) -> list[Any]:
        """The JSON bodies of the requests answered 2xx, in order."""
        with self._lock:
            return [json.loads(r["body"]) for r in self.requests if 200 <= r["status"] < 300]
