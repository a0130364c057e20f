"""Shared pieces of the benchmarks: services, isolated settings, child processes, output.

Child processes run this working tree's Pulse, or (``start(..., source=...)``)
Pulse as of another git revision, checked out into a worktree of its own under
the cache directory (``checkout``), so a benchmark can run today's flow and the
one being written side by side in one run (``flows``, ``--baseline REV``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from pulse import services
from pulse.services.kafka import ensure_topics
from pulse.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results"


def bench_settings(**overrides: Any) -> Settings:
    """Settings on the local services with a fresh topic and key prefix."""
    tag = f"bench{uuid.uuid4().hex[:6]}"
    base = load_settings()
    settings = load_settings(
        environ=base.as_environ(),
        topic_prefix=tag,
        redis_prefix=tag,
        consumer_group_prefix=tag,
        **overrides,
    )
    services.up(settings, create_topics=False)
    ensure_topics(settings)
    return settings


def drop_keys(settings: Settings) -> None:
    """Every Redis key of the benchmark's prefix, gone (SCAN, never KEYS: others'
    data shares the server)."""
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    batch: list[Any] = []
    for key in client.scan_iter(match=f"{settings.redis_prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)
    client.close()


def day(text: str) -> float:
    """A YYYY-MM-DD day (UTC) as epoch seconds: an argparse ``type``."""
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day as YYYY-MM-DD") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(
    settings: Settings, *args: str, log: Path, source: Path | None = None
) -> subprocess.Popen[bytes]:
    """``pulse <args>`` with ``settings``, output appended to ``log``.

    With ``source`` (a checkout of another revision, see ``checkout``) the child
    runs that checkout's Pulse on this virtualenv's interpreter (the same
    dependencies), from its directory and with it first on PYTHONPATH, and gets
    only the settings that revision accepts (``source_environ``).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        env, cwd = dict(os.environ, **settings.as_environ()), None
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(source_environ(source, settings))
        env["PYTHONPATH"] = os.pathsep.join(
            [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        cwd = source
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", *args], env=env, cwd=cwd, stdout=fh, stderr=fh
        )


def stop(*procs: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM to every process at once, then each gets ``timeout`` s before SIGKILL."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class HttpConnection:
    """A keep-alive HTTP/1.1 connection that sends one request at a time.

    The load generator must cost far less CPU than the server it loads: on two
    cores, httpx's async client spent about 1 ms of CPU per request and became
    the bottleneck at 1,000 requests/s. Requests here are pre-encoded bytes and
    responses are read by Content-Length, nothing more.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        """Send one pre-encoded request; the response's status (its body is read
        and dropped)."""
        status, _body = await self.exchange(raw, keep_body=False)
        return status

    async def exchange(self, raw: bytes, keep_body: bool = True) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body if keep_body else b""

    def close(self) -> None:
        self.writer.close()


def http_request(
    method: str,
    path: str,
    host: str,
    port: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """One HTTP/1.1 request as bytes, ready to write on a keep-alive connection."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps({"machine": machine(), **payload}, option=orjson.OPT_INDENT_2))
    return path


def rules_without_triggers(path: Path) -> Path:
    """A rule directory with the shipped loyalty programme, RFM and policy but no
    trigger rule, for a benchmark to measure without rules or add its own."""
    source = Path(load_settings().rules_dir)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.yaml"):
        old.unlink()
    for name in ("loyalty.yaml", "rfm.yaml", "policy.yaml"):
        (path / name).write_text((source / name).read_text())
    return path


# ---------------------------------------------------------------- another revision's Pulse

REPO = Path(__file__).resolve().parent.parent
BASELINE = "before-batch-flow"  # the tag on the flow before issue 10's batch operators
# The code that makes up a flow's processes: a working tree with changes here is
# not its HEAD.
FLOW_CODE = ("dataflows", "engine", "pulse", "dispatch")
# Settings that differ between the runs of one configuration (fresh names,
# ports): left out of what identifies a configuration already checked.
_PER_RUN = frozenset(
    f"PULSE_{name.upper()}"
    for name in ("topic_prefix", "redis_prefix", "consumer_group_prefix", "webhook_url",
                 "recovery_dir")
)  # fmt: skip
# What a checkout accepts, run in it: its settings' fields, whether it takes
# the environment given on stdin (leaving out, one after the other, settings it
# rejects whose value is only the working tree's default), and where its modules
# came from.
_PROBE = """
import json, sys
import msgspec
import dataflows, engine, pulse
from pulse.settings import Settings, SettingsError, load_settings
request = json.load(sys.stdin)
fields = {f.name for f in msgspec.structs.fields(Settings)}
env = {k: v for k, v in request["environ"].items() if k[len("PULSE_"):].lower() in fields}
out = {"unknown": sorted(set(request["environ"]) - set(env)), "dropped": [], "error": None}
while True:
    try:
        load_settings(environ=env)
        break
    except SettingsError as exc:
        name = "PULSE_" + str(exc).split(" ", 1)[0].upper()
        if name not in env or name not in request["droppable"]:
            out["error"] = str(exc)
            break
        del env[name]
        out["dropped"].append(name)
out["modules"] = [m.__file__ for m in (pulse, dataflows, engine)]
print(json.dumps(out))
"""
_REJECTED: dict[tuple[Path, frozenset[tuple[str, str]]], frozenset[str]] = {}
_TOLD: set[tuple[Path, str]] = set()


@dataclass(frozen=True)
class Flow:
    """Pulse's processes from one source: this working tree (``source`` None) or a
    git revision checked out in a worktree of its own."""

    role: str  # "before" (the baseline) or "new" (the working tree): the tables' names
    rev: str  # the revision as asked for ("before-batch-flow", "HEAD"), or "working tree"
    sha: str
    subject: str
    source: Path | None = None
    dirty: bool = False  # the working tree's flow code differs from its HEAD

    @property
    def short(self) -> str:
        return self.sha[:10] + ("+" if self.dirty else "")

    @property
    def label(self) -> str:
        """How tables name it: ``before ed6c8c9a1b`` or ``new ed6c8c9a1b+``."""
        return f"{self.role} {self.short}"

    def describe(self) -> str:
        if self.source is None:
            changes = " + uncommitted changes to the flow" if self.dirty else ""
            return f"{self.role}: the working tree, on {self.sha[:10]} {self.subject}{changes}"
        return (
            f"{self.role}: {self.rev} = {self.sha[:10]} {self.subject} "
            f"(checked out in {self.source})"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "rev": self.rev,
            "sha": self.sha,
            "subject": self.subject,
            "source": str(self.source) if self.source else None,
            "uncommitted_changes": self.dirty,
        }

    def start(self, settings: Settings, *args: str, log: Path) -> subprocess.Popen[bytes]:
        return start(settings, *args, log=log, source=self.source)


def add_baseline_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        metavar="REV",
        help=f"also run Pulse as of this git revision (default {BASELINE}: the flow "
        "before issue 10), checked out into <cache_dir>/bench/rev-<sha>, side by side "
        "with the working tree's ('new'); 'none' runs the working tree alone",
    )


def flows(baseline: str) -> list[Flow]:
    """The baseline revision (unless ``none``), then the working tree; each described."""
    out = [] if baseline.lower() == "none" else [checkout(baseline)]
    out.append(working_tree())
    for flow in out:
        print(flow.describe(), flush=True)
    return out


def working_tree() -> Flow:
    sha = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", *FLOW_CODE))
    return Flow("new", "working tree", sha, _git("log", "-1", "--format=%s", sha), dirty=dirty)


def checkout(rev: str, role: str = "before") -> Flow:
    """``rev`` checked out (detached) at ``<cache_dir>/bench/rev-<sha>``; reused
    when a clean checkout of it is already there."""
    try:
        sha = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--baseline {rev}: not a git revision of {REPO}") from None
    path = Path(load_settings().cache_dir) / "bench" / f"rev-{sha[:10]}"
    _git("worktree", "prune")  # forget worktrees whose directory is gone
    if not _is_clean_checkout(path, sha):
        if path.exists():
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True
            )
            shutil.rmtree(path, ignore_errors=True)
            _git("worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", str(path), sha)
    return Flow(role, rev, sha, _git("log", "-1", "--format=%s", sha), source=path)


def _is_clean_checkout(path: Path, sha: str) -> bool:
    if not (path / ".git").is_file():
        return False
    try:
        head = _git("rev-parse", "HEAD", cwd=path)
        changed = _git("status", "--porcelain", "--untracked-files=no", cwd=path)
    except subprocess.CalledProcessError:
        return False
    return head == sha and not changed


def _git(*args: str, cwd: Path | None = None) -> str:
    """A git command's output (in this repository by default); waits out another
    process's lock on the repository."""
    for attempt in range(30):
        done = subprocess.run(["git", *args], cwd=cwd or REPO, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
        if ".lock" not in done.stderr or attempt == 29:
            raise subprocess.CalledProcessError(
                done.returncode, ["git", *args], done.stdout, done.stderr
            )
        time.sleep(1.0)
    raise AssertionError("unreachable")


def source_environ(source: Path, settings: Settings) -> dict[str, str]:
    """``settings`` as PULSE_* variables that the checkout at ``source`` accepts.

    Settings it does not know (added since) are left out, and so is a setting it
    rejects whose value is the working tree's default (a default changed since);
    a setting the benchmark chose that it rejects stops the benchmark, naming it.
    Checked once per configuration, in the checkout, which must also import its
    own modules rather than this tree's.
    """
    environ = settings.as_environ()
    key = (source, frozenset((k, v) for k, v in environ.items() if k not in _PER_RUN))
    if key not in _REJECTED:
        defaults = Settings().as_environ()
        request = {
            "environ": environ,
            "droppable": sorted(k for k, v in environ.items() if defaults.get(k) == v),
        }
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd=source,
            env=dict(
                {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")},
                PYTHONPATH=str(source),
            ),
        )
        if done.returncode != 0:
            raise SystemExit(f"the checkout at {source} does not start:\n{done.stderr}")
        probe = json.loads(done.stdout)
        if probe["error"]:
            raise SystemExit(f"the checkout at {source} rejects the settings: {probe['error']}")
        strays = [
            m for m in probe["modules"] if not Path(m).resolve().is_relative_to(source.resolve())
        ]
        if strays:
            raise SystemExit(f"the checkout at {source} imported {strays}, not its own modules")
        for name in probe["unknown"] + probe["dropped"]:
            if (source, name) not in _TOLD:
                _TOLD.add((source, name))
                why = "unknown to it" if name in probe["unknown"] else "it rejects the default"
                print(f"  ({source.name} runs without {name}: {why})", flush=True)
        _REJECTED[key] = frozenset(probe["unknown"] + probe["dropped"])
    return {k: v for k, v in environ.items() if k not in _REJECTED[key]}
