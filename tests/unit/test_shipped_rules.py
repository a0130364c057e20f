"""The shipped rules against their own tests: every ``rules/tests/*.yaml`` passes,
and every enabled rule in ``rules/`` has at least one test.

The same check as ``pulse rules test``, run by pytest so CI fails when a rule,
the policy or the engine changes what a marketer's test expects.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from engine.loyalty import LoyaltyProgram
from engine.rules import testcases
from engine.rules.ruleset import RuleSet
from pulse.rules_files import load_loyalty, load_rules

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
TEST_FILES = sorted([*(RULES_DIR / "tests").glob("*.yaml"), *(RULES_DIR / "tests").glob("*.yml")])


@cache
def _shipped() -> tuple[RuleSet, LoyaltyProgram]:
    loaded = load_rules(RULES_DIR)
    if loaded.rules is None:
        pytest.fail("the shipped rules have problems:\n" + "\n".join(map(str, loaded.problems)))
    return loaded.rules, load_loyalty(RULES_DIR)


def _case(path: Path) -> testcases.TestCase:
    case, problems = testcases.parse(path.read_text(encoding="utf-8"), str(path))
    assert not problems, "\n".join(str(p) for p in problems)
    assert case is not None
    return case


def test_there_are_rule_tests() -> None:
    assert TEST_FILES, f"no test files in {RULES_DIR / 'tests'}"


@pytest.mark.parametrize("path", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_rule_test_passes(path: Path) -> None:
    rules, loyalty = _shipped()
    case = _case(path)
    result = testcases.run(case, rules, loyalty)
    if not result.passed:
        made = "\n".join(f"  {testcases.describe(case.start, d)}" for d in result.decisions)
        pytest.fail(
            f"{path.name} ({case.test.name}):\n"
            + "\n".join(f"  {failure}" for failure in result.failures)
            + f"\ndecisions made:\n{made or '  none'}",
            pytrace=False,
        )


def test_every_enabled_rule_has_a_test() -> None:
    rules, _loyalty = _shipped()
    covered: set[str] = set()
    for path in TEST_FILES:
        test = _case(path).test
        covered.update(test.rules)
        covered.update(expected.rule for expected in test.expect)
    missing = sorted(set(rules.by_id) - covered)
    assert not missing, f"enabled rules without a test in rules/tests/: {', '.join(missing)}"
