"""actions.yaml is checked like a rule file: every problem at once, each at its
line and column, in plain words; the shipped file is clean."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from engine.nba.book import load_actions
from engine.nba.config import DECIDE_ON, json_schema
from pulse.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "rules" / "actions.yaml"

GOOD = """
rewards:
  - event: order_placed
    value: 1.0
actions:
  - id: discount
    eligible: cart.value >= rule.params.min_cart
    params: {min_cart: 20.0}
  - id: nothing
"""


def problems(text: str) -> list[str]:
    return [str(p) for p in load_actions("actions.yaml", text).problems]


def test_the_shipped_actions_are_clean() -> None:
    loaded = load_actions(str(SHIPPED), SHIPPED.read_text(encoding="utf-8"))
    assert loaded.problems == []
    assert loaded.book is not None
    ids = [a.id for a in loaded.book.actions]
    assert {"discount", "bundle", "loyalty_invite", "nothing"} <= set(ids)
    assert loaded.book.control == "nothing"
    assert loaded.book.by_id["nothing"].eligible is None


def test_defaults_apply_without_a_policy_section() -> None:
    book = load_actions("actions.yaml", GOOD).book
    assert book is not None
    assert book.control == "nothing" and book.exploration == 0.05 and book.holdout == 0.05
    assert book.window_s == 86400.0 and book.decide_on == frozenset(DECIDE_ON)
    assert book.top_reward == 1.0


def test_the_version_follows_the_text() -> None:
    a = load_actions("actions.yaml", GOOD).book
    b = load_actions("actions.yaml", GOOD + "\n# a comment\n").book
    assert a is not None and b is not None
    assert a.version != b.version
    assert a.version == load_actions("other.yaml", GOOD).book.version  # type: ignore[union-attr]


BAD = """\
policy:
  exploration: 1.5
  window: 0m
  decide_on: [page_veiw]
rewards:
  - event: add_to_crt
    value: 0.5
  - event: custom
    when: event.nme == "x"
    value: 1
actions:
  - id: discount
    eligible: cart.value >= "a" && profile.ordrs < 3
    wieght: 2
  - id: bundle
    eligible: rule.fired == 0
  - id: bundle
  - id: nothing
    eligible: "true"
"""


def test_every_problem_is_reported_at_its_line_and_column() -> None:
    assert problems(BAD) == [
        "actions.yaml:2:16: `policy.exploration` must be between 0 and 1, got 1.5",
        "actions.yaml:3:11: the window must be longer than zero",
        "actions.yaml:4:15: unknown event type `page_veiw`; did you mean `page_view`?",
        "actions.yaml:6:12: unknown event type `add_to_crt`; did you mean `add_to_cart`?",
        "actions.yaml:9:17: `event` has no field `nme`; did you mean `name`?",
        "actions.yaml:13:26: cannot compare a number with text",
        "actions.yaml:13:44: `profile` has no field `ordrs`; did you mean `orders`?",
        "actions.yaml:14:5: unknown key `wieght` in actions[1]; did you mean `weight`?",
        "actions.yaml:16:15: `rule.fired` is a trigger rule's memory; an action has none",
        "actions.yaml:17:9: action id `bundle` is already used above",
        "actions.yaml:19:15: `nothing` is the control action, always eligible: remove `eligible`",
    ]
    assert load_actions("actions.yaml", BAD).book is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "actions.yaml:1:1: the file is empty"),
        ("- a\n", "actions.yaml:1:1: the file must hold `key: value` lines at the top, not a list"),
        (
            "rewards: [{event: order_placed, value: 1}]\nactions: [{id: a}, {id: b}]\n",
            "actions.yaml:2:10: the control action `nothing` is not among the actions: add it "
            "(no `eligible`: it is always eligible)",
        ),
        (
            GOOD.replace("value: 1.0", "value: 0"),
            "actions.yaml:4:12: `rewards[1].value` must be more than 0 and at most 1, got 0",
        ),
        (
            GOOD.replace("rule.params.min_cart", "rule.params.min"),
            "actions.yaml:7:41: `rule.params` has no field `min`; it has: min_cart",
        ),
        (
            GOOD.replace("cart.value >= rule.params.min_cart", "cart.value"),
            "actions.yaml:7:15: a condition must be true or false; this expression gives a number",
        ),
    ],
)
def test_one_problem(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_a_multi_line_condition_points_into_its_own_line() -> None:
    text = GOOD.replace(
        "eligible: cart.value >= rule.params.min_cart",
        'eligible: >-\n      cart.value >= 1.0\n      && profile.tierr == "gold"',
    )
    assert problems(text) == [
        "actions.yaml:9:18: `profile` has no field `tierr`; did you mean `tier`?"
    ]


def test_the_json_schema_describes_the_file() -> None:
    schema = json_schema()
    encoded = msgspec.json.encode(schema).decode()
    assert "ActionsFile" in encoded and "exploration" in encoded and "eligible" in encoded


def test_pulse_rules_check_reports_the_actions_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED.parent, rules)
    assert main(["rules", "check", str(rules)]) == 0
    (rules / "actions.yaml").write_text(BAD, encoding="utf-8")
    capsys.readouterr()
    assert main(["rules", "check", str(rules)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{rules / 'actions.yaml'}{line.removeprefix('actions.yaml')}" for line in problems(BAD)
    ]
