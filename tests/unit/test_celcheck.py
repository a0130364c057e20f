"""The CEL checker tells a marketer, before a rule goes live, what the interpreter would
only discover while evaluating it: these tests pin each kind of message to its place in
the expression, and property tests hold the checker to what ``cel`` really does."""

from __future__ import annotations

from typing import Any

import cel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark.exceptions import LarkError

from engine.rules import celcheck
from engine.rules.celcheck import CelProblem, Checked, Reference, check
from engine.rules.celtypes import (
    BOOL,
    DOUBLE,
    DURATION,
    DYN,
    INT,
    STRING,
    TIMESTAMP,
    TYPE,
    UINT,
    CelType,
    Environment,
    list_of,
    map_of,
    struct,
)

ITEM = struct(
    "item",
    {
        "sku": (STRING, "the product's SKU"),
        "price": (DOUBLE, "the unit price"),
        "category": (STRING, "the product category"),
    },
)
PROFILE = struct(
    "profile",
    {
        "orders": (INT, "orders placed"),
        "revenue": (DOUBLE, "lifetime revenue"),
        "tier": (STRING, "loyalty tier"),
        "traits": (map_of(STRING), "free-form traits"),
        "consent": (map_of(BOOL), "consent per channel"),
        "segments": (list_of(STRING), "segments the customer is in"),
    },
)
EVENT = struct(
    "event",
    {
        "type": (STRING, "the event type"),
        "sku": (STRING, "the product's SKU"),
        "price": (DOUBLE, "the price"),
        "items": (list_of(ITEM), "the cart's items"),
    },
)
ENV = Environment(
    {
        "profile": PROFILE,
        "event": EVENT,
        "now": DOUBLE,
        "recommendations": list_of(STRING),
    },
    {"min": ((list_of(DOUBLE),), DOUBLE)},
)
NAMES = "event, now, profile, recommendations"
T0 = "timestamp('2024-01-01T00:00:00Z')"


def sample_context() -> cel.Context:
    """Values of the declared types, as the engine would pass them."""
    context = cel.Context(
        {
            "profile": {
                "orders": 3,
                "revenue": 120.5,
                "tier": "gold",
                "traits": {"email": "ann@example.com"},
                "consent": {"email": True},
                "segments": ["vip", "newsletter"],
            },
            "event": {
                "type": "product_viewed",
                "sku": "SKU-1",
                "price": 19.99,
                "items": [{"sku": "SKU-1", "price": 19.99, "category": "shoes"}],
            },
            "now": 1_700_000_000.0,
            "recommendations": ["SKU-2", "SKU-3"],
        }
    )
    context.add_function("min", lambda values: min(values))
    return context


def only(expression: str, expect: CelType | None = None) -> CelProblem:
    checked = check(expression, ENV, expect)
    assert len(checked.problems) == 1, checked.problems
    return checked.problems[0]


def where(problem: CelProblem) -> tuple[int, int, str]:
    return problem.line, problem.column, problem.message


def spans(checked: Checked, expression: str) -> list[tuple[str, tuple[str, ...], str]]:
    return [(ref.root, ref.path, expression[ref.start : ref.end]) for ref in checked.references]


# --- Syntax: the interpreter's parser decides, the message is plain ------------------------


@pytest.mark.parametrize(
    ("expression", "line", "column", "message"),
    [
        ("profile.orders > 1 &&", 1, 22, "the expression ends too early"),
        ("(profile.orders > 1", 1, 20, "the expression ends too early: a `)` is missing"),
        ("profile.orders > 1)", 1, 19, "unexpected `)`"),
        (
            'profile.tier == "gold',
            1,
            17,
            "unbalanced quotes: the text starting here is never closed",
        ),
        ("profile.orders = 1", 1, 16, "use `==` to compare two values"),
        ("profile.orders > 1 and true", 1, 20, "unexpected `and`; use `&&` for and"),
        (
            "profile.tier == 'a\\qb'",
            1,
            17,
            "`\\q` is not a known escape in text; write `\\\\` for a backslash",
        ),
        ("if", 1, 1, "`if` is a reserved word and cannot be used as a name"),
        ("99999999999999999999 > 1", 1, 1, "this number is too big"),
        ("has(profile)", 1, 5, "has() needs a field to test, such as has(profile.traits.email)"),
        (
            "event.items.all(1, true)",
            1,
            17,
            "this must be a simple name, like `x` in `list.all(x, x > 0)`",
        ),
        (
            "profile.orders > 1 &&\n  (profile.tier == 'gold' ||",
            2,
            29,
            "the expression ends too early",
        ),
        (
            "profile.tier == 'gold\n'",
            1,
            17,
            "unbalanced quotes: text in quotes must end on "
            "the same line (use ''' for text over several lines)",
        ),
    ],
)
def test_syntax_errors_are_one_plain_problem(
    expression: str, line: int, column: int, message: str
) -> None:
    checked = check(expression, ENV, BOOL)
    assert checked.type is None
    assert checked.references == []
    assert [where(p) for p in checked.problems] == [(line, column, message)]
    assert "expecting" not in message


def test_syntax_problem_offset_matches_line_and_column() -> None:
    expression = "profile.orders > 1 &&\n  profile.tier =="
    problem = only(expression)
    assert (problem.line, problem.column) == (2, 18)
    assert problem.offset == len(expression)


def test_what_the_interpreter_accepts_the_grammar_parses() -> None:
    # If the grammar missed any of these, check() would silently pass them as dyn.
    accepted = [
        "[1, 2,]",
        "[,]",
        "{'a': 1,}",
        "{,}",
        "Foo{a: 1,}",
        "a.b.Foo{}",
        ".a",
        ".f(1)",
        "!-1",
        "!!-1.5",
        "--1",
        "1 - -1",
        "x ? y : z ? 1 : 2",
        "1.5e3 + .5 + 1E-3 + 1u + 0x1F + 0x1fU + 007",
        "r'\\d' + R\"\\w\" + '''a'b''' + \"\"\"a\"b\"\"\" + '\\u00e9\\x41\\101\\n'",
        "b'\\xff' + br'\\x' + B\"y\" + bR'z'",
        "a // a comment\n && b",
        "'''two\nlines'''",
        "1.size() + 1.0.size()",
        "x in [1] in [true]",
        "a.b(c)[d].e",
    ]
    for expression in accepted:
        cel.compile(expression)
        celcheck._parser().parse(expression)


def test_an_expression_the_grammar_cannot_read_is_not_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Failing:
        def parse(self, text: str) -> None:
            raise LarkError(text)

    monkeypatch.setattr(celcheck, "_parser", lambda: Failing())
    assert check("profile.orders > 1", ENV, BOOL) == Checked(DYN, [], [])


# --- Names, fields and references ----------------------------------------------------------


def test_unknown_name_suggests_and_lists_what_rules_can_read() -> None:
    problem = only("profle.orders > 1", BOOL)
    assert where(problem) == (
        1,
        1,
        f"unknown name `profle`; did you mean `profile`? Rules can read: {NAMES}",
    )


def test_unknown_name_without_a_close_match_still_lists_the_names() -> None:
    problem = only("true && zzz", BOOL)
    assert where(problem) == (1, 9, f"unknown name `zzz`. Rules can read: {NAMES}")


def test_unknown_field_points_at_the_field() -> None:
    problem = only("profile.orders > 1 &&\n  profile.ordres > 2", BOOL)
    assert where(problem) == (2, 11, "`profile` has no field `ordres`; did you mean `orders`?")
    assert problem.offset == len("profile.orders > 1 &&\n  profile.")


def test_unknown_field_without_a_close_match_lists_the_fields() -> None:
    problem = only("event.zzz == 'x'", BOOL)
    assert problem.message == "`event` has no field `zzz`; it has: items, price, sku, type"


def test_unknown_field_of_a_list_element() -> None:
    problem = only("event.items[0].pric > 1.0", BOOL)
    assert where(problem) == (1, 16, "`event.items[0]` has no field `pric`; did you mean `price`?")


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        ("profile.tier.name == 'x'", 14, "`profile.tier` is text, so it has no field `name`"),
        (
            "profile.orders.count > 1",
            16,
            "`profile.orders` is a number, so it has no field `count`",
        ),
        (
            "profile.segments.first == 'x'",
            18,
            "`profile.segments` is a list of text, so it has no field `first`",
        ),
    ],
)
def test_selecting_from_a_value_that_has_no_fields(
    expression: str, column: int, message: str
) -> None:
    assert where(only(expression, BOOL)) == (1, column, message)


def test_a_map_field_is_any_key() -> None:
    checked = check("profile.traits.anything == 'x'", ENV, BOOL)
    assert checked.problems == []
    assert checked.type == BOOL


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        ("size(profile) > 0", 6, "use a field of `profile`, such as `profile.orders`"),
        ("profile == 1", 1, "use a field of `profile`, such as `profile.orders`"),
        ("event.size() > 0", 1, "use a field of `event`, such as `event.type`"),
    ],
)
def test_a_bare_struct_is_not_a_value(expression: str, column: int, message: str) -> None:
    assert where(only(expression, BOOL)) == (1, column, message)


def test_references_cover_the_struct_fields_read() -> None:
    expression = (
        "profile.traits.email.endsWith('@example.com') && event.items[0].price > now"
        " && recommendations.size() > 0 && profile.orders > 1"
    )
    checked = check(expression, ENV, BOOL)
    assert checked.problems == []
    assert spans(checked, expression) == [
        ("profile", ("traits",), "profile.traits"),
        ("event", ("items",), "event.items"),
        ("now", (), "now"),
        ("recommendations", (), "recommendations"),
        ("profile", ("orders",), "profile.orders"),
    ]
    assert [ref.type for ref in checked.references] == [
        map_of(STRING),
        list_of(ITEM),
        DOUBLE,
        list_of(STRING),
        INT,
    ]


def test_reference_fields() -> None:
    checked = check("profile.orders > 1", ENV, BOOL)
    assert checked.references == [Reference("profile", ("orders",), 0, 14, INT)]


def test_references_inside_macros_and_indexes_are_in_source_order() -> None:
    expression = "profile.traits[event.type] == 'x' || event.items.exists(i, i.sku == event.sku)"
    checked = check(expression, ENV, BOOL)
    assert checked.problems == []
    assert spans(checked, expression) == [
        ("profile", ("traits",), "profile.traits"),
        ("event", ("type",), "event.type"),
        ("event", ("items",), "event.items"),
        ("event", ("sku",), "event.sku"),
    ]


def test_a_name_cannot_start_with_a_dot() -> None:
    problem = only(".profile.orders > 1", BOOL)
    assert where(problem) == (
        1,
        1,
        "a name cannot start with a dot: write `profile`, not `.profile`",
    )


# --- Valid expressions and their types -----------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("profile.orders > 1 && profile.tier == 'gold'", BOOL),
        ("profile.orders * 2 + 1", INT),
        ("profile.revenue * 1.5", DOUBLE),
        ("double(profile.orders) * 1.5", DOUBLE),
        ("profile.orders > 1.5", BOOL),
        ("1u + 2u", UINT),
        ("profile.tier + '!'", STRING),
        ("profile.segments + recommendations", list_of(STRING)),
        ("profile.segments[0]", STRING),
        ("profile.traits['email']", STRING),
        ("profile.consent.email", BOOL),
        ("size(profile.segments) + profile.tier.size()", INT),
        ("profile.tier.startsWith('g') || profile.tier.matches('^pl')", BOOL),
        ("'vip' in profile.segments && 'email' in profile.consent", BOOL),
        ("profile.orders > 1 ? 'many' : 'few'", STRING),
        ("profile.orders > 1 ? 1 : 'few'", DYN),
        ("min([profile.revenue, event.price])", DOUBLE),
        ("int('3') + int(profile.revenue)", INT),
        ("string(profile.orders) + string(now)", STRING),
        ("type(profile.orders) == int", BOOL),
        ("type(now)", TYPE),
        ("dyn(profile.orders) > 1", BOOL),
        ("profile.tier == null", BOOL),
        (f"{T0} + duration('1h') > {T0}", BOOL),
        (f"{T0} - {T0}", DURATION),
        (f"{T0}.getFullYear() > 2020 && duration('90m').getMinutes() == 90", BOOL),
        (f"timestamp({T0})", TIMESTAMP),
        ("{'a': 1, 'b': 2}", map_of(INT)),
        ("[1, 'a']", list_of(DYN)),
        ("-profile.orders", INT),
    ],
)
def test_valid_expressions_have_no_problems(expression: str, expected: CelType) -> None:
    checked = check(expression, ENV)
    assert checked.problems == []
    assert checked.type == expected
    cel.evaluate(expression, sample_context())


# --- Macros ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("event.items.all(i, i.price > 0.0)", BOOL),
        ("profile.segments.exists(s, s.startsWith('v'))", BOOL),
        ("profile.segments.exists_one(s, s == 'vip')", BOOL),
        ("profile.segments.existsOne(s, s == 'vip')", BOOL),
        ("event.items.filter(i, i.category == 'shoes')", list_of(ITEM)),
        ("event.items.map(i, i.price)", list_of(DOUBLE)),
        ("event.items.map(i, i.price > 10.0, i.sku)", list_of(STRING)),
        ("profile.traits.exists(k, k == 'email')", BOOL),
        ("profile.consent.filter(k, profile.consent[k])", list_of(STRING)),
        ("event.items.all(i, event.items.exists(j, j.sku == i.sku))", BOOL),
    ],
)
def test_macros_bind_the_element_or_key(expression: str, expected: CelType) -> None:
    checked = check(expression, ENV)
    assert checked.problems == []
    assert checked.type == expected
    cel.evaluate(expression, sample_context())


def test_a_bound_variable_is_not_a_reference() -> None:
    expression = "event.items.exists(i, i.price > profile.revenue)"
    assert spans(check(expression, ENV, BOOL), expression) == [
        ("event", ("items",), "event.items"),
        ("profile", ("revenue",), "profile.revenue"),
    ]


def test_a_bound_variable_must_not_hide_a_name_rules_read() -> None:
    problem = only("event.items.all(event, event.price > 0.0)", BOOL)
    assert where(problem) == (
        1,
        17,
        "`event` is already a name rules can read; pick another name such as `e`",
    )


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        ("profile.tier.all(x, true)", 14, "`all` works on a list or a map; `profile.tier` is text"),
        (
            "profile.segments.exists(s, s)",
            28,
            "the condition in `exists` must be true or false; `s` is text",
        ),
        ("event.items.all(i)", 13, "`all` takes a name and a condition, e.g. list.all(x, x > 0)"),
        (
            "profile.segments.filter(s, s.size()).size() > 0",
            28,
            "the condition in `filter` must be true or false; `s.size()` is a number",
        ),
    ],
)
def test_macro_misuse(expression: str, column: int, message: str) -> None:
    assert where(only(expression, BOOL)) == (1, column, message)


# --- has() -----------------------------------------------------------------------------------


def test_has_tests_a_map_key() -> None:
    expression = "has(profile.traits.email) && has(profile.consent.sms)"
    checked = check(expression, ENV, BOOL)
    assert checked.problems == []
    assert checked.type == BOOL
    assert spans(checked, expression) == [
        ("profile", ("traits",), "profile.traits"),
        ("profile", ("consent",), "profile.consent"),
    ]


def test_has_on_a_struct_field_is_always_true() -> None:
    problem = only("has(profile.tier)", BOOL)
    assert where(problem) == (
        1,
        5,
        "has() only tests map keys such as profile.traits.email; `profile.tier` is always "
        "present, so compare it with a value instead",
    )


def test_has_on_a_misspelt_field() -> None:
    problem = only("has(profile.tire)", BOOL)
    assert problem.message == "`profile` has no field `tire`; did you mean `tier`?"


# --- Operators -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        (
            "profile.orders * 1.5 > 3.0",
            16,
            "cannot multiply an int by a double: convert one side, "
            "e.g. double(profile.orders) * 1.5",
        ),
        (
            "profile.revenue + profile.orders > 1.0",
            17,
            "cannot add a double and an int: convert one side, "
            "e.g. profile.revenue + double(profile.orders)",
        ),
        (
            "profile.revenue - 1 > 0.0",
            17,
            "cannot subtract an int from a double: convert one side, "
            "e.g. profile.revenue - double(1)",
        ),
        (
            "uint(1) + profile.orders > 1u",
            9,
            "cannot add a uint and an int: convert one side, e.g. int(uint(1)) + profile.orders",
        ),
        (
            "profile.revenue % 2.0 == 0.0",
            17,
            "cannot take the remainder of a double divided by a double: `%` works on whole "
            "numbers only; convert, e.g. int(profile.revenue) % int(2.0)",
        ),
        ("profile.tier * 2 == 'x'", 14, "cannot multiply text by an int"),
        ("profile.tier + 1 == 'x'", 14, "cannot add text and an int"),
        (f"duration('1h') + {T0} > {T0}", 16, "cannot add a duration and a timestamp"),
    ],
)
def test_arithmetic_needs_the_same_kind_of_number(
    expression: str, column: int, message: str
) -> None:
    assert where(only(expression, BOOL)) == (1, column, message)
    with pytest.raises(TypeError):
        cel.evaluate(expression, sample_context())


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        ("profile.tier < 1", 14, "cannot compare text with a number"),
        ("profile.orders >= profile.tier", 16, "cannot compare a number with text"),
        ("profile.consent.email > 1", 23, "cannot compare true/false with a number"),
        ("profile.segments < profile.segments", 18, "lists cannot be compared with `<`"),
        ("null < 1", 6, "cannot compare null with a number"),
    ],
)
def test_ordering_needs_comparable_values(expression: str, column: int, message: str) -> None:
    assert where(only(expression, BOOL)) == (1, column, message)
    with pytest.raises(TypeError):
        cel.evaluate(expression, sample_context())


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        ("profile.tier == 1", 14, "cannot compare text with a number: they are never equal"),
        (
            "profile.segments != 'vip'",
            18,
            "cannot compare a list of text with text: they are never equal",
        ),
        (
            "1 in profile.segments",
            3,
            "`profile.segments` holds text, so it never contains a number",
        ),
        (
            "1 in profile.traits",
            3,
            "the keys of `profile.traits` are text, so it never contains a number",
        ),
        (
            "'a' in profile.tier",
            5,
            "`in` needs a list or a map on its right; `profile.tier` is text",
        ),
    ],
)
def test_equality_and_membership(expression: str, column: int, message: str) -> None:
    assert where(only(expression, BOOL)) == (1, column, message)


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        (
            "profile.orders && true",
            1,
            "`&&` joins conditions that are true or false; `profile.orders` is a number",
        ),
        (
            "true || profile.tier",
            9,
            "`||` joins conditions that are true or false; `profile.tier` is text",
        ),
        (
            "profile.tier ? 1 : 2",
            1,
            "the condition before `?` must be true or false; `profile.tier` is text",
        ),
        ("!profile.orders", 1, "`!` needs true/false, but `profile.orders` is a number"),
        ("-profile.tier == 'a'", 1, "only numbers can be negative; `profile.tier` is text"),
        (
            "profile.segments['a'] == 'x'",
            18,
            "a position in a list must be a whole number; `'a'` is text",
        ),
        ("profile.traits[1] == 'x'", 16, "the keys of `profile.traits` are text, not a number"),
        (
            "profile.tier[0] == 'g'",
            1,
            "`profile.tier` is text, so nothing can be picked out of it with [ ]",
        ),
        (
            "{1.5: 'a'}.size() > 0",
            2,
            "map keys must be text, whole numbers or true/false, not a number",
        ),
    ],
)
def test_logic_unary_and_indexing(expression: str, column: int, message: str) -> None:
    checked = check(expression, ENV)
    assert [where(p) for p in checked.problems] == [(1, column, message)]


def test_lists_added_together_hold_the_same_kind_of_value() -> None:
    problem = only("profile.segments + [1] == []", BOOL)
    assert where(problem) == (1, 18, "cannot add a list of text and a list of numbers")


def test_dyn_suppresses_type_errors() -> None:
    expression = "dyn(profile.tier) * 1.5 > dyn(1) && dyn('x') in dyn(2)"
    assert check(expression, ENV, BOOL).problems == []


# --- Functions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "column", "message"),
    [
        ("profile.tier.lowerAscii() == 'gold'", 14, "unknown function `lowerAscii`"),
        ("max([1.0]) > 1.0", 1, "unknown function `max`"),
        ("bool('true')", 1, "unknown function `bool`"),
        (
            "profile.tier.startswith('g')",
            14,
            "unknown function `startswith`; did you mean `startsWith`?",
        ),
        ("sise(profile.tier) > 0", 1, "unknown function `sise`; did you mean `size`?"),
        (
            "startsWith(profile.tier, 'g')",
            1,
            "`startsWith` is written after a value: write profile.tier.startsWith('g')",
        ),
        (
            "profile.segments.min() > 1.0",
            18,
            "`min` is not written after a value: write min(profile.segments)",
        ),
        ("size(1) > 0", 6, "`size` needs text, bytes, a list or a map here, not a number"),
        ("int(true) > 0", 5, "`int` needs a number or text here, not true/false"),
        (
            "profile.orders.startsWith('1')",
            1,
            "`startsWith` works on text; `profile.orders` is a number",
        ),
        ("profile.tier.startsWith(1)", 25, "`startsWith` needs text here, not a number"),
        ("profile.tier.endsWith()", 14, "`endsWith` takes 1 value, but 0 were given"),
        ("min() > 1.0", 1, "`min` takes 1 value, but 0 were given"),
        ("min([1, 2]) > 1.0", 5, "`min` needs a list of double here, not a list of int"),
        (
            "min(profile.segments) > 1.0",
            5,
            "`min` needs a list of numbers here, not a list of text",
        ),
    ],
)
def test_functions(expression: str, column: int, message: str) -> None:
    checked = check(expression, ENV)
    assert [where(p) for p in checked.problems] == [(1, column, message)]


@pytest.mark.parametrize(
    "expression",
    [
        "profile.tier.lowerAscii() == 'gold'",
        "max([1.0]) > 1.0",
        "bool('true')",
        "int(true) > 0",
        "size(1) > 0",
        "startsWith(profile.tier, 'g')",
    ],
)
def test_functions_the_checker_rejects_the_interpreter_rejects(expression: str) -> None:
    with pytest.raises(RuntimeError, match="Undefined variable or function"):
        cel.evaluate(expression, sample_context())


# --- Expected type, ordering and de-duplication --------------------------------------------


def test_a_condition_must_be_true_or_false() -> None:
    problem = only("profile.orders + 1", BOOL)
    assert where(problem) == (
        1,
        1,
        "a condition must be true or false; this expression gives a number",
    )
    assert where(only("  profile.tier", BOOL)) == (
        1,
        3,
        "a condition must be true or false; this expression gives text",
    )


def test_another_expected_type_is_named_too() -> None:
    problem = only("profile.orders", STRING)
    assert problem.message == "this expression must give text; it gives a number"


def test_all_problems_in_source_order_without_duplicates() -> None:
    expression = (
        "profile.tier.sise() > 0 &&\n"
        "  profle.x > 1 &&\n"
        "  profile.ordres * 1.5 > 2.0 &&\n"
        "  profle.x > 1"
    )
    checked = check(expression, ENV, BOOL)
    assert [where(p) for p in checked.problems] == [
        (1, 14, "unknown function `sise`; did you mean `size`?"),
        (2, 3, f"unknown name `profle`; did you mean `profile`? Rules can read: {NAMES}"),
        (3, 11, "`profile` has no field `ordres`; did you mean `orders`?"),
        (4, 3, f"unknown name `profle`; did you mean `profile`? Rules can read: {NAMES}"),
    ]
    assert [p.offset for p in checked.problems] == sorted(p.offset for p in checked.problems)


def test_a_mistake_does_not_cascade() -> None:
    checked = check("profile.ordres * 1.5 > 2.0 && size(profile) > 0", ENV, BOOL)
    assert [p.column for p in checked.problems] == [9, 36]
    assert checked.type == BOOL


def test_messages_cannot_be_built() -> None:
    problem = only("Foo{a: 1} == 1", BOOL)
    assert problem.message == (
        "rules cannot build messages such as `Foo{a: 1}`; use a map such as {'key': value} instead"
    )


# --- Property tests: the checker agrees with the interpreter -------------------------------

Typed = tuple[str, CelType]

INT_LEAVES = st.sampled_from(
    ["profile.orders", "size(profile.segments)", "event.items.size()", "3", "0", "12"]
)
DOUBLE_LEAVES = st.sampled_from(
    ["profile.revenue", "event.price", "now", "1.5", "0.25", "event.items[0].price"]
)
STRING_LEAVES = st.sampled_from(
    ["profile.tier", "event.type", "event.sku", "profile.traits.email", "'vip'", '"gold"']
)
BOOL_LEAVES = st.sampled_from(
    ["true", "false", "profile.consent.email", "has(profile.traits.email)"]
)
LIST_LEAVES = st.sampled_from(["profile.segments", "recommendations", "['a', 'b']"])


def _ints(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return INT_LEAVES
    smaller = _ints(depth - 1)
    return st.one_of(
        INT_LEAVES,
        st.tuples(smaller, st.sampled_from(["+", "-", "*"]), smaller).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        smaller.map(lambda e: f"-({e})"),
        smaller.map(lambda e: f"({e}) % 7"),
        _strings(depth - 1).map(lambda e: f"size({e})"),
        _lists(depth - 1).map(lambda e: f"{e}.size()"),
        st.just("int(profile.revenue)"),
    )


def _doubles(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return DOUBLE_LEAVES
    smaller = _doubles(depth - 1)
    return st.one_of(
        DOUBLE_LEAVES,
        st.tuples(smaller, st.sampled_from(["+", "-", "*", "/"]), smaller).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        _ints(depth - 1).map(lambda e: f"double({e})"),
        st.tuples(smaller, smaller).map(lambda t: f"min([{t[0]}, {t[1]}])"),
        _bools(depth - 1).map(lambda e: f"({e} ? 1.0 : 2.0)"),
    )


def _strings(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return STRING_LEAVES
    smaller = _strings(depth - 1)
    return st.one_of(
        STRING_LEAVES,
        st.tuples(smaller, smaller).map(lambda t: f"({t[0]} + {t[1]})"),
        _ints(depth - 1).map(lambda e: f"string({e})"),
        _lists(depth - 1).map(lambda e: f"{e}[0]"),
    )


def _bools(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return BOOL_LEAVES
    ints, doubles, strings = _ints(depth - 1), _doubles(depth - 1), _strings(depth - 1)
    numbers = st.one_of(ints, doubles)
    smaller = _bools(depth - 1)
    relop = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    return st.one_of(
        BOOL_LEAVES,
        st.tuples(numbers, relop, numbers).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(strings, relop, strings).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(smaller, st.sampled_from(["&&", "||"]), smaller).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        smaller.map(lambda e: f"!({e})"),
        st.tuples(strings, _lists(depth - 1)).map(lambda t: f"{t[0]} in {t[1]}"),
        strings.map(lambda e: f"profile.tier.startsWith({e})"),
        doubles.map(lambda e: f"event.items.all(i, i.price > {e})"),
        strings.map(lambda e: f"profile.segments.exists(s, s == {e})"),
    )


def _lists(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return LIST_LEAVES
    smaller = _lists(depth - 1)
    return st.one_of(
        LIST_LEAVES,
        st.tuples(smaller, smaller).map(lambda t: f"({t[0]} + {t[1]})"),
        smaller.map(lambda e: f"{e}.map(x, x + '!')"),
        smaller.map(lambda e: f"{e}.filter(x, x.size() > 0)"),
        _strings(depth - 1).map(lambda e: f"[{e}, 'c']"),
    )


WELL_TYPED: st.SearchStrategy[Typed] = st.one_of(
    _ints(2).map(lambda e: (e, INT)),
    _doubles(2).map(lambda e: (e, DOUBLE)),
    _strings(2).map(lambda e: (e, STRING)),
    _bools(2).map(lambda e: (e, BOOL)),
    _lists(2).map(lambda e: (e, list_of(STRING))),
)


def _ill_typed() -> st.SearchStrategy[str]:
    ints, doubles, strings = _ints(1), _doubles(1), _strings(1)
    return st.one_of(
        st.tuples(ints, st.sampled_from(["+", "-", "*", "/"]), doubles).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        st.tuples(doubles, st.sampled_from(["+", "-", "*", "%"]), ints).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        st.tuples(strings, st.sampled_from(["<", "<=", ">", ">="]), ints).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        st.tuples(doubles, st.sampled_from(["<", ">="]), strings).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        st.tuples(strings, ints).map(lambda t: f"{t[0]} + {t[1]}"),
        st.tuples(doubles, doubles).map(lambda t: f"{t[0]} % {t[1]}"),
        strings.map(lambda e: f"-({e})"),
        ints.map(lambda e: f"!({e})"),
    )


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _evaluate(expression: str) -> Any:
    return cel.evaluate(expression, sample_context())


@PROPERTY
@given(WELL_TYPED)
def test_well_typed_expressions_pass_and_evaluate(typed: Typed) -> None:
    expression, expected = typed
    checked = check(expression, ENV)
    assert checked.problems == []
    assert checked.type == expected
    _evaluate(expression)  # would raise TypeError on a type mistake the checker missed


@PROPERTY
@given(_ill_typed())
def test_ill_typed_expressions_are_reported_and_fail_in_the_interpreter(
    expression: str,
) -> None:
    assert check(expression, ENV).problems != []
    with pytest.raises(TypeError):
        _evaluate(expression)
