"""Reads marketers' files from ``rules_dir`` into engine configuration.

The engine does no I/O; this module reads and parses, and turns every problem
into one error naming the file.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml

from engine.loyalty import DEFAULT_PROGRAM, LoyaltyError, LoyaltyProgram
from engine.nba.book import ACTIONS_FILE, LoadedActions, load_actions
from engine.rfm import RfmBands, RfmError
from engine.rules.validate import Loaded, load


class RulesFileError(ValueError):
    """A file in rules_dir is unreadable or invalid; the message names it."""


def load_loyalty(rules_dir: str | Path) -> LoyaltyProgram:
    """``loyalty.yaml`` from the rules directory, or the default programme without one."""
    path = Path(rules_dir) / "loyalty.yaml"
    if not path.exists():
        return DEFAULT_PROGRAM
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RulesFileError(f"{path}: {exc}") from None
    try:
        return LoyaltyProgram.from_mapping(data or {}, source=str(path))
    except LoyaltyError as exc:
        raise RulesFileError(str(exc)) from None


def load_rfm(rules_dir: str | Path) -> RfmBands:
    """``rfm.yaml`` from the rules directory, or the default bands without one."""
    path = Path(rules_dir) / "rfm.yaml"
    if not path.exists():
        return RfmBands()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RulesFileError(f"{path}: {exc}") from None
    try:
        return RfmBands.from_mapping(data or {}, source=str(path))
    except RfmError as exc:
        raise RulesFileError(str(exc)) from None


def load_action_book(rules_dir: str | Path) -> LoadedActions | None:
    """``actions.yaml`` (next-best-action) checked and compiled; None without one."""
    path = Path(rules_dir) / ACTIONS_FILE
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesFileError(f"{path}: {exc}") from None
    return load_actions(str(path), text)


def rule_files(rules_dir: str | Path) -> dict[str, str]:
    """The YAML files of a rule directory (not its tests/), name -> text.

    Names are the paths as given plus the file name, which is what messages
    show (``rules/abandoned_cart.yaml:12:5: ...``).
    """
    base = Path(rules_dir)
    if not base.is_dir():
        raise RulesFileError(f"{base}: no such directory")
    files = {}
    for path in sorted([*base.glob("*.yaml"), *base.glob("*.yml")]):
        try:
            files[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesFileError(f"{path}: {exc}") from None
    return files


def load_rules(rules_dir: str | Path) -> Loaded:
    """Check and compile the trigger rules and policy of a rule directory."""
    return load(rule_files(rules_dir))


def copy_with_waits(source: str | Path, target: str | Path, waits: Mapping[str, str]) -> Path:
    """Copy a rule directory, changing some rules' ``wait.for`` (rule id -> duration).

    For the demo and tests, where a 30-minute wait would outlast the run;
    every other file is copied unchanged, tests included.
    """
    src, dst = Path(source), Path(target)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for rule_id, duration in waits.items():
        path = dst / f"{rule_id}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data.setdefault("wait", {})["for"] = duration
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dst
