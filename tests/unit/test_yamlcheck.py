"""YAML rule files: every problem at once, each at its line and column."""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from msgspec import Meta

from engine.rules.model import Expected, Policy, Rule, RuleTest
from engine.rules.yamlcheck import Document, Path, Problem, check, parse, to_struct

VALID = """\
id: cart_reminder
trigger:
  event: cart_updated
action:
  channel: email
  template: cart
"""


def problems(text: str, kind: type[msgspec.Struct] = Rule) -> list[str]:
    """Parse and check ``text``; each problem as ``line:col: message``."""
    doc, found = parse(text, "r.yaml")
    if doc is not None:
        found += check(doc, kind, "r.yaml")
    return [str(p).removeprefix("r.yaml:") for p in found]


def document(text: str) -> Document:
    doc, found = parse(text, "r.yaml")
    assert doc is not None and found == []
    return doc


def test_a_valid_rule_has_no_problems_and_converts() -> None:
    doc = document(VALID + "active:\n  from: 2026-12-01\n")
    assert check(doc, Rule, "r.yaml") == []
    rule = to_struct(doc, Rule)
    assert rule.id == "cart_reminder" and rule.action.channel == "email"
    assert rule.active is not None and rule.active.from_ == "2026-12-01"


def test_a_problem_reads_file_line_column_message() -> None:
    assert str(Problem("rules/a.yaml", 3, 7, "oops")) == "rules/a.yaml:3:7: oops"


# Unknown and missing keys ------------------------------------------------------


def test_an_unknown_key_suggests_the_closest_one() -> None:
    text = VALID + "wait:\n  for: 30m\n  cancel_onn: []\n"
    assert problems(text) == ["9:3: unknown key `cancel_onn` in wait; did you mean `cancel_on`?"]


def test_an_unknown_key_without_a_close_one_lists_the_valid_keys() -> None:
    text = VALID + "  foo: 1\n"
    assert problems(text) == [
        "7:3: unknown key `foo` in action; expected one of: channel, template, payload, deadline"
    ]


def test_an_unknown_key_at_the_top_says_so() -> None:
    assert problems(VALID + "priorty: 3\n") == [
        "7:1: unknown key `priorty` at the top of the rule; did you mean `priority`?"
    ]


def test_an_unknown_key_in_a_list_item_names_the_item_counting_from_one() -> None:
    text = VALID + "wait:\n  cancel_on:\n    - event: order_placed\n    - event: x\n      whn: y\n"
    assert problems(text) == ["11:7: unknown key `whn` in wait.cancel_on[2]; did you mean `when`?"]


def test_a_missing_required_key_is_reported_at_its_mapping() -> None:
    text = "id: a\ntrigger:\n  event: x\n"
    assert problems(text) == ["1:1: `action` is missing: every rule needs one"]


def test_a_missing_nested_key_names_where() -> None:
    text = "id: a\ntrigger:\n  event: x\naction:\n  template: t\n"
    assert problems(text) == ["5:3: `channel` is missing in action"]


# Types, literals, bounds, patterns ---------------------------------------------


def test_wrong_types_are_told_in_plain_words() -> None:
    text = VALID + "priority: high\nenabled: maybe\nconditions: abc\n"
    assert problems(text) == [
        '7:11: `priority` must be a whole number, got text "high"',
        '8:10: `enabled` must be true or false, got text "maybe"',
        '9:13: `conditions` must be a list, got text "abc"',
    ]


def test_a_number_where_text_is_expected_suggests_quotes() -> None:
    text = VALID.replace("template: cart", "template: 404")
    assert problems(text) == [
        "6:13: `action.template` must be text, got the number 404; "
        "put it in quotes to keep it as text"
    ]


def test_a_mapping_given_text_and_an_empty_required_mapping() -> None:
    text = "id: a\ntrigger: cart_updated\naction:\n"
    assert problems(text) == [
        '2:10: `trigger` must be a mapping (`key: value` lines), got text "cart_updated"',
        "3:8: `action` must be a mapping (`key: value` lines), got nothing",
    ]


def test_a_literal_suggests_the_closest_value() -> None:
    text = VALID.replace("channel: email", "channel: emial")
    assert problems(text) == [
        "5:12: `action.channel` must be one of email, sms, push, webhook, in_app, preferred; "
        'got "emial" — did you mean "email"?'
    ]


def test_a_literal_without_a_close_value_lists_them() -> None:
    assert problems(VALID + "category: promo\n") == [
        '7:11: `category` must be one of marketing, transactional; got "promo"'
    ]


def test_numeric_bounds_from_meta() -> None:
    text = VALID + "holdout: 150\npriority: -1\nlimits:\n  max_entries: 0\n"
    assert problems(text) == [
        "7:10: `holdout` must be between 0 and 100, got 150",
        "8:11: `priority` must be between 0 and 100, got -1",
        "10:16: `limits.max_entries` must be at least 1, got 0",
    ]


def test_a_whole_number_is_a_number_but_not_the_other_way_round() -> None:
    assert problems(VALID + "holdout: 5\n") == []
    assert problems(VALID + "priority: 5.5\n") == [
        "7:11: `priority` must be a whole number, got the number 5.5"
    ]


def test_a_bad_duration_gets_the_duration_help() -> None:
    text = VALID + "wait:\n  for: 30 mins\n"
    assert problems(text) == [
        '8:8: bad duration "30 mins" for `wait.for`: '
        "use a number and a unit: 90s, 30m, 2h, 7d or 2w"
    ]


def test_a_duration_without_a_unit_gets_the_duration_help() -> None:
    text = VALID + "wait:\n  for: 30\n"
    assert problems(text) == [
        "8:8: bad duration 30 for `wait.for`: use a number and a unit: 90s, 30m, 2h, 7d or 2w"
    ]


def test_a_bad_time_of_day_gets_the_time_help() -> None:
    text = "quiet_hours:\n  start: 21:00\n  end: 25:00\n"
    assert problems(text, Policy) == [
        '3:8: bad time of day "25:00" for `quiet_hours.end`: '
        "use HH:MM on a 24-hour clock, e.g. 09:30"
    ]


def test_other_patterns_are_described_with_the_model_description() -> None:
    text = VALID.replace("id: cart_reminder", "id: Cart-Reminder")
    assert problems(text) == [
        "1:5: `id` must be lower-case letters, digits and underscores, starting with a letter; "
        'got "Cart-Reminder"'
    ]


def test_string_lengths() -> None:
    text = VALID.replace("template: cart", f"template: {'x' * 201}") + "conditions: ['']\n"
    assert problems(text) == [
        "6:13: `action.template` must have at most 200 characters, got 201",
        "7:14: `conditions[1]` must not be empty",
    ]


# Unions, optional fields, lists and dicts --------------------------------------


def test_a_union_of_a_type_and_a_list_of_it() -> None:
    text = VALID.replace("event: cart_updated", "event: 5")
    assert problems(text) == [
        "3:10: `trigger.event` must be an event type or a list of them, got the number 5"
    ]


def test_each_member_of_a_union_is_checked_in_full() -> None:
    text = VALID.replace("event: cart_updated", "event: [cart_updated, {a: 1}]")
    assert problems(text) == [
        "3:25: `trigger.event[2]` must be an event type, got a mapping",
    ]


def test_an_optional_field_may_be_empty() -> None:
    assert problems(VALID + "wait:\ngoal:\n") == []


def test_an_optional_field_gets_its_own_message() -> None:
    text = VALID + "goal: order_placed\n"
    assert problems(text) == [
        '7:7: `goal` must be a mapping (`key: value` lines), got text "order_placed"'
    ]


def test_list_items_are_checked_each() -> None:
    text = "quiet_hours:\n  channels: [email, fax, 3]\n"
    assert problems(text, Policy) == [
        "2:21: `quiet_hours.channels[2]` must be one of email, sms, push, webhook, in_app; "
        'got "fax"',
        "2:26: `quiet_hours.channels[3]` must be one of email, sms, push, webhook, in_app; got 3",
    ]


def test_literal_keys_of_a_dict_get_did_you_mean() -> None:
    text = "smart_sending:\n  emial: 16h\n  fax: 2h\n  sms: 3 days\n"
    assert problems(text, Policy) == [
        "2:3: unknown key `emial` in smart_sending; did you mean `email`?",
        "3:3: unknown key `fax` in smart_sending; expected one of: "
        "email, sms, push, webhook, in_app",
        '4:8: bad duration "3 days" for `smart_sending.sms`: '
        "use a number and a unit: 90s, 30m, 2h, 7d or 2w",
    ]


def test_text_keys_of_a_dict_must_be_text() -> None:
    text = VALID + "  payload:\n    1: profile.name\n"
    assert problems(text) == ["8:5: key `1` in action.payload must be text: put it in quotes"]


def test_a_dict_of_anything_accepts_anything() -> None:
    text = VALID + "params:\n  a: [1, {b: null}]\n  c: 2026-01-01\n  d: true\n"
    doc = document(text)
    assert check(doc, Rule, "r.yaml") == []
    assert to_struct(doc, Rule).params == {"a": [1, {"b": None}], "c": "2026-01-01", "d": True}


def test_checking_part_of_a_document() -> None:
    text = "name: t\nstart: 2026-01-01\nevents: []\nexpect:\n- at: x\n  rule: r\n  outcome: fird\n"
    doc = document(text)
    assert [str(p) for p in check(doc, Expected, "t.yaml", ("expect", 0))] == [
        "t.yaml:7:12: `expect[1].outcome` must be one of entered, fired, suppressed, held_out, "
        'deferred, cancelled, exited, converted, error; got "fird" — did you mean "fired"?'
    ]
    assert [p.message for p in check(document("name: t\n"), RuleTest, "t.yaml")] == [
        "`start` is missing: every rule test needs one",
        "`events` is missing: every rule test needs one",
        "`expect` is missing: every rule test needs one",
    ]


class Limited(msgspec.Struct, forbid_unknown_fields=True):
    tags: Annotated[list[str], Meta(min_length=2, max_length=3)]
    code: Annotated[str, Meta(pattern="^[A-Z]+$", min_length=2)]
    ratio: Annotated[float, Meta(gt=0, lt=1)] = 0.5
    named: Annotated[dict[str, int], Meta(max_length=1)] = {}
    loose: bool = False


class Loose(msgspec.Struct):
    a: int = 0


def test_lengths_patterns_and_strict_bounds_of_any_struct() -> None:
    text = "tags: [a]\ncode: x\nratio: 1\nnamed: {a: 1, b: 2}\n"
    assert problems(text, Limited) == [
        "1:7: `tags` must have at least 2 items, got 1",
        '2:7: `code` must be text matching ^[A-Z]+$; got "x"',
        "2:7: `code` must have at least 2 characters, got 1",
        "3:8: `ratio` must be more than 0 and less than 1, got 1",
        "4:8: `named` must have at most 1 entries, got 2",
    ]


def test_unknown_keys_are_allowed_where_the_struct_allows_them() -> None:
    assert problems("a: 1\nb: 2\n", Loose) == []


# Several problems, and parsing ---------------------------------------------------


def test_every_problem_of_a_file_is_reported_in_order() -> None:
    text = """\
id: Cart
trigger:
  event: cart_updated
  whenn: cart.total > 0
wait:
  for: soon
action:
  channel: emial
priority: high
"""
    assert problems(text) == [
        "1:5: `id` must be lower-case letters, digits and underscores, starting with a letter; "
        'got "Cart"',
        "4:3: unknown key `whenn` in trigger; did you mean `when`?",
        '6:8: bad duration "soon" for `wait.for`: use a number and a unit: 90s, 30m, 2h, 7d or 2w',
        "8:3: `template` is missing in action",
        "8:12: `action.channel` must be one of email, sms, push, webhook, in_app, preferred; "
        'got "emial" — did you mean "email"?',
        '9:11: `priority` must be a whole number, got text "high"',
    ]


def test_a_duplicate_key_is_a_problem_and_the_second_wins() -> None:
    doc, found = parse(VALID + "wait:\n  cancel_on: []\nwait:\n  for: 2h\n", "r.yaml")
    assert [str(p) for p in found] == [
        "r.yaml:9:1: key `wait` appears twice; the second would silently win"
    ]
    assert doc is not None and doc.value["wait"] == {"for": "2h"}
    assert doc.mark(("wait", "cancel_on")) == (10, 3)  # the first wait's positions are gone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "id: a\ntrigger:\n  event: x\n   when: y\n",
            "4:8: unexpected `:` here: indent this line like the one above it, "
            "or put a value that contains `: ` in quotes",
        ),
        (
            "id: a\ntrigger:\n    event: x\n  when: y\n",
            "4:3: this line is not indented like the lines above it",
        ),
        (
            'id: a\ntemplate: "cart\nchannel: email\n',
            "2:11: this quoted text is never closed: add the closing quote",
        ),
        ("id: a\ntrigger:\n\tevent: x\n", "3:1: a tab cannot indent YAML: use spaces"),
        ("id: a\ntrigger\naction: b\n", "2:1: expected `key: value` here, but there is no `:`"),
        (
            "id: a\nconditions: [a, b\naction: c\n",
            "2:13: this `[` is never closed with `]` (or a `,` is missing between its items)",
        ),
        ("id: @a\n", '1:5: a value cannot start with "@": put the value in quotes'),
        ("id: *a\n", "1:5: `*a` refers to `&a`, which is not defined above"),
        (
            "id: a\n---\nid: b\n",
            "2:1: a file holds a single document: remove this `---` and what follows, "
            "or move it to its own file",
        ),
        ("", "1:1: the file is empty"),
        ("# only a comment\n", "1:1: the file is empty"),
        ("- id: a\n", "1:1: the file must hold `key: value` lines at the top, not a list"),
        ("hello\n", "1:1: the file must hold `key: value` lines at the top, not a single value"),
        ("id: a\x07\n", "1:6: the file holds a character YAML does not allow (#x0007)"),
    ],
)
def test_syntax_errors_are_told_in_plain_words(text: str, expected: str) -> None:
    doc, found = parse(text, "r.yaml")
    assert doc is None
    assert [str(p) for p in found] == [f"r.yaml:{expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: !!int abc\n", '1:4: cannot read "abc" as `!!int`: remove the tag'),
        ("a: !money 5\n", '1:4: cannot read "5" as `!money`: remove the tag'),
        ("a: &x [1, *x]\n", "1:4: this list or mapping holds an alias to itself"),
        ("? [a]\n: 1\n", "1:3: a key must be a single word or value, not a list or mapping"),
        (
            "b: &b {x: 1}\nc:\n  <<: *b\n",
            "3:3: merging with `<<` is not supported here: write the keys out",
        ),
    ],
)
def test_values_yaml_cannot_give_are_problems(text: str, expected: str) -> None:
    doc, found = parse(text, "r.yaml")
    assert doc is not None
    assert [str(p) for p in found] == [f"r.yaml:{expected}"]


def test_scalars_resolve_like_safe_load_but_times_stay_text() -> None:
    text = (
        "a: 1\nb: 1.5\nc: yes\nd: ~\ne: 0x1F\nf: 2026-12-01\ng: 2026-12-01T09:00:00Z\n"
        "h: 21:30\ni: '7'\n"
    )
    assert document(text).value == {
        "a": 1,
        "b": 1.5,
        "c": True,
        "d": None,
        "e": 31,
        "f": "2026-12-01",
        "g": "2026-12-01T09:00:00Z",
        "h": "21:30",
        "i": "7",
    }


# Positions -----------------------------------------------------------------------


def test_mark_and_key_mark() -> None:
    doc = document(VALID + "conditions:\n  - a\n  - b\n")
    assert doc.mark(("action", "channel")) == (5, 12)
    assert doc.key_mark(("action", "channel")) == (5, 3)
    assert doc.mark(("conditions", 1)) == (9, 5)
    assert doc.key_mark(("conditions", 1)) == (9, 5)
    assert doc.mark(("action", "payload", "x")) == doc.mark(("action",)) == (5, 3)
    assert doc.key_mark(("wait",)) == doc.mark(()) == (1, 1)


def test_locate_in_a_plain_scalar() -> None:
    doc = document("trigger:\n  when: cart.total > 100\n")
    assert doc.locate(("trigger", "when"), 0) == (2, 9)
    assert doc.locate(("trigger", "when"), 13) == (2, 22)
    assert doc.locate(("trigger", "when"), 99) == (2, 25)  # just past the end


def test_locate_in_a_multi_line_plain_scalar() -> None:
    doc = document("when: cart.total > 100\n  && profile.vip\n")
    assert doc.value["when"] == "cart.total > 100 && profile.vip"
    assert doc.locate(("when",), 16) == (1, 23)  # the folded line break
    assert doc.locate(("when",), 17) == (2, 3)


def test_locate_in_a_single_quoted_scalar() -> None:
    doc = document("when: 'profile.name == ''Ann'' && x'\n")
    assert doc.value["when"] == "profile.name == 'Ann' && x"
    assert doc.locate(("when",), 0) == (1, 8)
    assert doc.locate(("when",), 16) == (1, 24)  # the first of ''
    assert doc.locate(("when",), 17) == (1, 26)  # A
    assert doc.locate(("when",), 25) == (1, 35)  # x


def test_locate_in_a_double_quoted_scalar_with_escapes() -> None:
    doc = document('when: "a == \\"b\\" \\u00e9 c"\n')
    assert doc.value["when"] == 'a == "b" é c'
    assert doc.locate(("when",), 5) == (1, 13)  # \"
    assert doc.locate(("when",), 6) == (1, 15)  # b
    assert doc.locate(("when",), 9) == (1, 19)  # \u00e9
    assert doc.locate(("when",), 11) == (1, 26)  # c


def test_locate_in_a_double_quoted_scalar_over_lines() -> None:
    doc = document('when: "a &&\n   b \\\n  c"\n')
    assert doc.value["when"] == "a && b c"
    assert doc.locate(("when",), 4) == (1, 12)  # the folded line break
    assert doc.locate(("when",), 5) == (2, 4)
    assert doc.locate(("when",), 6) == (2, 5)  # kept: an escaped line break follows
    assert doc.locate(("when",), 7) == (3, 3)


def test_locate_in_a_literal_block_scalar() -> None:
    doc = document("conditions:\n  - |\n    cart.total > 0 &&\n      profile.vip\n")
    path: Path = ("conditions", 0)
    assert doc.value["conditions"][0] == "cart.total > 0 &&\n  profile.vip\n"
    assert doc.locate(path, 0) == (3, 5)
    assert doc.locate(path, 17) == (3, 22)  # the line break
    assert doc.locate(path, 18) == (4, 5)
    assert doc.locate(path, 20) == (4, 7)


def test_locate_in_a_folded_block_scalar() -> None:
    doc = document("when: >-  # a comment\n  cart.total > 0\n  && x\n\n  || y\n")
    assert doc.value["when"] == "cart.total > 0 && x\n|| y"
    assert doc.locate(("when",), 14) == (2, 17)  # the folded line break
    assert doc.locate(("when",), 15) == (3, 3)
    assert doc.locate(("when",), 19) == (4, 1)  # the empty line
    assert doc.locate(("when",), 20) == (5, 3)


def test_locate_with_an_indentation_indicator_anchor_and_tag() -> None:
    doc = document("a:\n  - x: &t !!str |2\n        spaced\n       less\n")
    path: Path = ("a", 0, "x")
    assert doc.value["a"][0]["x"] == "  spaced\n less\n"
    assert doc.locate(path, 0) == (3, 7)
    assert doc.locate(path, 10) == (4, 8)


def test_locate_of_a_non_text_value_is_its_mark() -> None:
    doc = document("a:\n  b: 1\n")
    assert doc.locate(("a",), 3) == doc.mark(("a",)) == (2, 3)


# Properties ------------------------------------------------------------------------


def valid(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values of type ``t`` that msgspec.convert accepts, as YAML would give them."""
    if isinstance(t, mi.Metadata):
        return valid(t.type)
    if isinstance(t, mi.StructType):
        required = {f.encode_name: valid(f.type) for f in t.fields if f.required}
        optional = {f.encode_name: valid(f.type) for f in t.fields if not f.required}
        return st.fixed_dictionaries(required, optional=optional)
    if isinstance(t, mi.UnionType):
        return st.one_of([valid(m) for m in t.types])
    if isinstance(t, mi.ListType):
        return st.lists(valid(t.item_type), max_size=3)
    if isinstance(t, mi.DictType):
        return st.dictionaries(valid(t.key_type), valid(t.value_type), max_size=3)
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            return st.from_regex(t.pattern, fullmatch=True)
        return st.text(min_size=t.min_length or 0, max_size=t.max_length or 20)
    if isinstance(t, mi.IntType):
        return st.integers(t.ge, t.le)
    if isinstance(t, mi.FloatType):
        low = None if t.ge is None else math.ceil(t.ge)
        high = None if t.le is None else math.floor(t.le)
        return st.floats(t.ge, t.le, allow_nan=False) | st.integers(low, high)
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    simple: dict[type, st.SearchStrategy[Any]] = {
        mi.BoolType: st.booleans(),
        mi.NoneType: st.none(),
        mi.AnyType: anything,
    }
    return simple[type(t)]


anything: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(valid(mi.type_info(Rule)))
def test_any_valid_rule_round_trips_without_problems(data: dict[str, Any]) -> None:
    expected = msgspec.convert(data, Rule)
    # Escaped, not raw: PyYAML writes a raw \x85 that it then reads as a line break.
    doc, found = parse(yaml.safe_dump(data), "r.yaml")
    assert found == [] and doc is not None
    assert check(doc, Rule, "r.yaml") == []
    assert to_struct(doc, Rule) == expected


def source_char(text: str, line: int, column: int) -> str:
    """The character at a 1-based position of a text whose only line break is \\n."""
    row = text.split("\n")[line - 1]
    return row[column - 1] if column <= len(row) else "\n"


def scalar_style(text: str, path: Path) -> str | None:
    """The style PyYAML's emitter chose for the scalar at ``path``: plain, quoted or block."""
    node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    for part in path:
        entries = enumerate(node.value) if isinstance(part, int) else node.value
        node = next(value for key, value in entries if getattr(key, "value", key) == part)
    style: str | None = node.style
    return style


SCALAR_TEXT = st.text(alphabet="ab :#-'\"\\\t\n é{[&*", max_size=40)
STYLES = [None, "'", '"', "|", ">"]


@settings(max_examples=300)
@given(SCALAR_TEXT, st.sampled_from(STYLES), st.sampled_from([12, 80]), st.booleans())
def test_locate_points_at_each_character_of_a_scalar(
    value: str, style: str | None, width: int, nested: bool
) -> None:
    data: Any = {"a": [{"when": value}]} if nested else {"when": value}
    path: Path = ("a", 0, "when") if nested else ("when",)
    text = yaml.safe_dump(data, default_style=style, width=width, allow_unicode=True)
    doc, found = parse(text, "r.yaml")
    assert found == [] and doc is not None
    assume(doc.value == data)  # PyYAML's emitter does not round-trip some folded texts
    positions = [doc.locate(path, i) for i in range(len(value))]
    assert positions == sorted(set(positions))  # one spot each, in order
    quoted = scalar_style(text, path) == '"'
    for char, (line, column) in zip(value, positions, strict=True):
        found_char = source_char(text, line, column)
        escaped = quoted and found_char == "\\"
        folded = char in " \n" and found_char == "\n"
        assert found_char == char or escaped or folded, (char, found_char, text)
