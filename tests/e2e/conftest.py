"""The three Pulse processes (dataflow, API, dispatcher) for end-to-end tests."""

from __future__ import annotations

import base64
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pulse.rules_files import copy_with_waits
from pulse.settings import Settings, load_settings
from tests.helpers import PulseProcess, wait_for

WRITE_KEY = "e2e-write-key"
READ_KEY = "e2e-read-key"


# Waits of the shipped rules, shortened so a test sees them run out.
SHORT_WAITS = {"abandoned_cart": "3s", "browse_abandonment": "3s", "review_request": "3s"}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The shipped rules with short waits; a test module may override this fixture."""
    return copy_with_waits(load_settings(environ={}).rules_dir, tmp_path / "rules", SHORT_WAITS)


@pytest.fixture
def stack(pulse_settings: Settings, tmp_path: Path, rules_dir: Path) -> Iterator[Settings]:
    """Dataflow, API (with keys) and dispatcher as separate processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(
        environ=pulse_settings.as_environ(),
        api_port=port,
        write_keys=(WRITE_KEY,),
        read_keys=(READ_KEY,),
        rules_dir=str(rules_dir),
        # The collector waits up to 20 s for Kafka's acknowledgement, not 5: on
        # two cores shared by two test workers (one of which may be starting a
        # Kafka of its own, tests/integration/test_collector_outage.py), the
        # shared broker once took longer and a batch got 503 "resend these".
        # What these tests check is counting, not the broker's speed.
        ack_timeout_s=20.0,
    )
    procs = [
        PulseProcess(settings, tmp_path, "dataflow", "run"),
        PulseProcess(settings, tmp_path, "api", "api"),
        PulseProcess(settings, tmp_path, "dispatcher", "dispatch"),
    ]
    try:
        # Three interpreters import at once, while the other test worker runs:
        # as long a start-up as the console's stack allows (test_console_browser).
        wait_for(lambda: get(settings, "/readyz")[0] == 200 or _dead(procs), 60, "API ready")
        assert not _dead(procs), _logs(procs)
        yield settings
        assert not _dead(procs), "a process died during the test:\n" + _logs(procs)
    finally:
        for p in procs:
            p.stop()


def _dead(procs: list[PulseProcess]) -> bool:
    return any(not p.alive() for p in procs)


def _logs(procs: list[PulseProcess]) -> str:
    return "\n".join(f"--- {p.name}\n{p.log_text()[-3000:]}" for p in procs)


def request(
    settings: Settings, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    """One HTTP call; the key defaults to the write key for POST and the read key otherwise."""
    key = key or (WRITE_KEY if method == "POST" else READ_KEY)
    conn = http.client.HTTPConnection(settings.api_host, settings.api_port, timeout=10)
    try:
        data = orjson.dumps(body) if body is not None else None
        auth = base64.b64encode(f"{key}:".encode()).decode()
        conn.request(
            method,
            path,
            body=data,
            headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        )
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, orjson.loads(raw) if raw else None
    except OSError:
        return 0, None
    finally:
        conn.close()


def get(settings: Settings, path: str) -> tuple[int, Any]:
    return request(settings, "GET", path)
