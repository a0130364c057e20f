"""Reads marketers' files from ``rules_dir`` into engine configuration.

The engine does no I/O; this module reads and parses, and turns every problem
into one error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.loyalty import DEFAULT_PROGRAM, LoyaltyError, LoyaltyProgram
from engine.rfm import RfmBands, RfmError


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
