"""The ``pulse`` command line, without starting any service.

``--help`` is the documentation most users read first, and ``pulse config`` is
how they check what a process would run with; both must work on a machine
with nothing running and must fail readably on bad settings.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import orjson
import pytest

from pulse.cli import build_parser, main

EXPECTED = {"services", "config", "run", "api", "dispatch", "demo", "replay", "status", "rules"}
RULES_ACTIONS = ("check", "test", "dry-run", "deploy", "rollback", "versions", "schema")


def _subcommands() -> tuple[str, ...]:
    """Every subcommand the parser has, so a new one is covered without editing this."""
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return tuple(sorted(sub.choices))


SUBCOMMANDS = _subcommands()


def test_the_expected_subcommands_exist() -> None:
    assert set(SUBCOMMANDS) >= EXPECTED


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Drop the developer's own PULSE_* settings so results do not depend on the shell."""
    for name in list(os.environ):
        if name.startswith("PULSE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "streaming, real-time personalization engine" in out
    for command in SUBCOMMANDS:
        assert command in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pulse {command}")
    description = out.split("\n\n")[1]
    assert len(description.split()) >= 8, f"{command} --help has no real description"


def test_main_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "usage: pulse" in capsys.readouterr().out


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("action", RULES_ACTIONS)
def test_every_rules_action_has_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["rules", action, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: pulse rules " + action)


def test_services_rejects_an_unknown_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["services", "restart"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_options_parse_to_the_expected_types() -> None:
    args = build_parser().parse_args(
        ["--config", "x.toml", "demo", "--customers", "5", "--rate", "2.5"]
    )
    assert (args.config, args.customers, args.rate) == ("x.toml", 5, 2.5)
    args = build_parser().parse_args(
        ["rules", "dry-run", "win_back", "--from", "f.csv", "--preset", "online-retail"]
    )
    assert (args.rules, args.source, args.preset, args.contactable) == (
        ["win_back"],
        "f.csv",
        "online-retail",
        False,
    )
    args = build_parser().parse_args(["run", "--workers", "3", "--no-recovery"])
    assert (args.workers, args.no_recovery, args.recovery_dir) == (3, True, None)


def test_config_prints_the_effective_settings_as_json(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("PULSE_PARTITIONS", "7")
    clean_env.setenv("PULSE_TOPIC_PREFIX", "cli-test")
    clean_env.setenv("PULSE_WRITE_KEYS", "supersecretkey")
    assert main(["config"]) == 0
    captured = capsys.readouterr()
    shown = orjson.loads(captured.out)
    assert shown["partitions"] == 7
    assert shown["topic_prefix"] == "cli-test"
    assert shown["kafka_bootstrap"] is None
    assert "supersecretkey" not in captured.out
    assert shown["write_keys"] == ["supe***"]


def test_config_reads_the_config_option(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pulse.toml"
    path.write_text("[pulse]\nworkers = 5\n")
    assert main(["--config", str(path), "config"]) == 0
    assert orjson.loads(capsys.readouterr().out)["workers"] == 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PULSE_PARTITIONS", "abc"), ("PULSE_PARTITIONS", "0"), ("PULSE_REDIS_URL", "http://x")],
)
def test_invalid_settings_exit_2_with_one_line(
    variable: str,
    value: str,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv(variable, value)
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pulse: invalid settings: ")
    assert variable in lines[0]
    assert variable.removeprefix("PULSE_").lower() in lines[0]


def test_missing_config_file_exits_2(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.toml" in err
