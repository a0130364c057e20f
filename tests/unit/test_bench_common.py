"""The benchmarks' machinery for running another revision's Pulse (benchmarks/common.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from benchmarks import common
from benchmarks.profiles import worker_counts
from pulse.settings import load_settings

# An older Pulse in miniature: fewer settings, and one that takes fewer values.
OLD_SETTINGS = """\
from typing import Literal

import msgspec


class SettingsError(ValueError):
    pass


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    partitions: int = 4
    topic_prefix: str = "pulse"
    kafka_connectors: Literal["stock"] = "stock"
    workers: Literal[1] = 1


def load_settings(environ):
    raw = {k[6:].lower(): v for k, v in environ.items() if k.startswith("PULSE_")}
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("$.", 1)[1].rstrip("`")
        raise SettingsError(f"{field} (from PULSE_{field.upper()}): {exc}") from None
"""


@pytest.fixture
def old_checkout(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    for package in ("pulse", "dataflows", "engine"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "pulse" / "settings.py").write_text(OLD_SETTINGS)
    (root / "pulse" / "cli.py").write_text("print('old cli', __file__)\n")
    return root


def test_a_checkout_gets_only_the_settings_it_accepts(old_checkout: Path) -> None:
    settings = load_settings(environ={}, partitions=2, topic_prefix="benchx")
    env = common.source_environ(old_checkout, settings)
    # Known and accepted: kept. Unknown to it: left out. Rejected but only the
    # working tree's default (kafka_connectors "own"): left out.
    assert env["PULSE_PARTITIONS"] == "2"
    assert env["PULSE_TOPIC_PREFIX"] == "benchx"
    assert env["PULSE_WORKERS"] == "1"
    assert "PULSE_KAFKA_CONNECTORS" not in env
    assert "PULSE_REDIS_PREFIX" not in env


def test_a_chosen_setting_the_checkout_rejects_stops_the_benchmark(old_checkout: Path) -> None:
    with pytest.raises(SystemExit, match="workers"):
        common.source_environ(old_checkout, load_settings(environ={}, workers=2))


def test_start_runs_the_checkouts_own_code(old_checkout: Path, tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    proc = common.start(load_settings(environ={}), "run", log=log, source=old_checkout)
    assert proc.wait(30) == 0
    assert f"old cli {old_checkout / 'pulse' / 'cli.py'}" in log.read_text()


def test_checkout_makes_a_worktree_and_reuses_it_while_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    (repo / "flow.py").write_text("OLD = True\n")
    git("add", "flow.py")
    git("commit", "-q", "-m", "The old flow")
    git("tag", "old")
    (repo / "flow.py").write_text("OLD = False\n")
    git("commit", "-q", "-am", "The new flow")
    monkeypatch.setattr(common, "REPO", repo)
    monkeypatch.setenv("PULSE_CACHE_DIR", str(tmp_path / "cache"))

    flow = common.checkout("old")
    assert flow.source is not None
    assert flow.sha == git("rev-parse", "old")
    assert flow.subject == "The old flow"
    assert flow.source == tmp_path / "cache" / "bench" / f"rev-{flow.sha[:10]}"
    assert (flow.source / "flow.py").read_text() == "OLD = True\n"
    (flow.source / "marker").write_text("")  # untracked: the checkout is still clean
    assert common.checkout("old").source == flow.source
    assert (flow.source / "marker").exists()
    (flow.source / "flow.py").write_text("edited\n")  # no longer the revision: made again
    assert common.checkout("old").source == flow.source
    assert (flow.source / "flow.py").read_text() == "OLD = True\n"
    with pytest.raises(SystemExit, match="not a git revision"):
        common.checkout("no-such-tag")


def test_worker_counts_sums_per_worker_progress() -> None:
    raw = {
        b"0": orjson.dumps({"processed": 10, "started_at": 1.0, "at": 2.0}),
        b"1": orjson.dumps({"processed": 5, "started_at": 1.0, "at": 2.0}),
        b"junk": b"{}",
    }
    assert worker_counts(raw) == {0: 10, 1: 5}
