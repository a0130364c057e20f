"""Rule sets from YAML texts, for tests."""

from __future__ import annotations

from collections.abc import Mapping

from engine.rules.ruleset import RuleSet
from engine.rules.validate import load


def compile_rules(files: Mapping[str, str]) -> RuleSet:
    """Compile rule files (name -> YAML); a problem fails loudly with every message."""
    loaded = load(files)
    if loaded.rules is None:
        raise AssertionError("\n".join(str(p) for p in loaded.problems))
    return loaded.rules
