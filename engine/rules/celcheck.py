"""Check a rule's CEL expression before the rule goes live.

The ``cel`` interpreter only fails when it evaluates an expression: a rule that
compares ``profile.tier`` with a number, multiplies an int by a double or
misspells ``profile.orders`` would be accepted when it is saved and then fail,
or silently never fire, for every customer it meets. Marketers write these
expressions by hand in YAML, so every such mistake has to be reported while the
rule is being written, in their words (no parser jargon), at the exact line and
column inside the expression.

The checker agrees with the interpreter rather than with the full CEL
specification: the syntax check is the interpreter's own parser, the operators
and functions it accepts are the ones the ``cel`` package really implements
(for instance it has no ``max`` or ``lowerAscii``, and cannot mix an int with a
double), and anything typed ``dyn`` is trusted. It also reports which profile
and event fields a rule reads (``Reference``), so that the engine knows what a
rule depends on.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cel
from lark import Lark, Token, Tree
from lark.exceptions import LarkError

from engine.rules.celtypes import (
    BOOL,
    BYTES,
    DOUBLE,
    DURATION,
    DYN,
    INT,
    NULL,
    NUMBERS,
    STRING,
    TIMESTAMP,
    TYPE,
    UINT,
    CelType,
    Environment,
    ListType,
    MapType,
    StructType,
    assignable,
    is_dyn,
    list_of,
    map_of,
)

__all__ = ["CelProblem", "Checked", "Reference", "check"]


@dataclass(frozen=True)
class CelProblem:
    offset: int  # 0-based character offset in the expression where the problem is
    line: int  # 1-based line within the expression (expressions can span lines)
    column: int  # 1-based column within that line
    message: str  # plain language for a marketer, no parser jargon


@dataclass(frozen=True)
class Reference:
    root: str  # a top-level variable name, e.g. "profile"
    path: tuple[str, ...]  # the chain of StructType fields selected, e.g. ("orders",)
    start: int  # offset of the first char of the root identifier
    end: int  # offset just after the last selected struct field name
    type: CelType  # the type of the last field in the path


@dataclass
class Checked:
    type: CelType | None  # result type (None when errors make it unknown)
    problems: list[CelProblem]
    references: list[Reference]  # in source order


def check(expression: str, env: Environment, expect: CelType | None = None) -> Checked:
    """Type-check ``expression`` against ``env``; ``expect`` is the type the rule needs
    (BOOL for conditions)."""
    try:
        cel.compile(expression)
    except ValueError as error:
        problem = _syntax_problem(expression, str(error), _has_example(env))
        return Checked(None, [problem], [])
    try:
        tree = _parser().parse(expression)
    except LarkError:
        # The interpreter accepts it, so the rule must not be blocked by a gap here.
        return Checked(DYN, [], [])
    checker = _Checker(expression, env)
    root = _build(tree)
    result = checker.check(root)
    if expect is not None and result is not None and not assignable(result, expect):
        checker.report(root.start, _expect_message(result, expect))
    return Checked(result, checker.sorted_problems(), checker.sorted_references())


def _position(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _problem(source: str, offset: int, message: str) -> CelProblem:
    line, column = _position(source, offset)
    return CelProblem(offset, line, column, message)


# --- Syntax errors, as the interpreter's parser reports them ----------------------------

_ERROR_LINE = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_ESCAPE = re.compile(
    r"\\(?:[abfnrtv\"'\\?`]|[xX][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-3][0-7]{2})"
)
_WORD_HINTS = {"and": "use `&&` for and", "or": "use `||` for or", "not": "use `!` for not"}


def _syntax_problem(source: str, error: str, has_example: str) -> CelProblem:
    """One problem for the interpreter's first real error (it may list several, and
    some are follow-ups of its own, such as "Incomplete `ExprContext`")."""
    errors = [m for m in _ERROR_LINE.finditer(error) if not m[3].startswith("Incomplete ")]
    if not errors:
        return _problem(source, 0, "this expression cannot be read")
    line, column, detail = int(errors[0][1]), int(errors[0][2]), errors[0][3]
    offset = _offset(source, line, column)
    return _problem(source, offset, _syntax_message(source, offset, detail, has_example))


def _offset(source: str, line: int, column: int) -> int:
    lines = source.split("\n")
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + column - 1
    return max(0, min(offset, len(source)))


def _syntax_message(source: str, offset: int, detail: str, has_example: str) -> str:
    detail = detail.removeprefix("Syntax error: ")
    if detail.startswith("token recognition error"):
        return _unreadable(source, offset)
    if match := re.match(r"(?:mismatched|extraneous) input '(.*?)' expecting", detail):
        return _unexpected(match[1])
    if match := re.match(r"no viable alternative at input '(.*)'", detail):
        return _unexpected(match[1])
    if match := re.match(r"missing '(.*?)' at '(.*)'", detail):
        if match[2] == "<EOF>":
            return f"the expression ends too early: a `{match[1]}` is missing"
        return f"a `{match[1]}` is missing before `{match[2]}`"
    if match := re.match(r"reserved identifier: (\w+)", detail):
        return f"`{match[1]}` is a reserved word and cannot be used as a name"
    if re.match(r"invalid u?int literal", detail):
        return "this number is too big"
    if match := re.match(r"unsupported syntax:? '(.*?)'", detail):
        return f"`{match[1]}` is not supported in rules"
    if detail.startswith("invalid argument to has()"):
        return f"has() needs a field to test, such as has({has_example})"
    if detail.startswith("argument must be a simple name"):
        return "this must be a simple name, like `x` in `list.all(x, x > 0)`"
    return re.sub(r"\s*expecting .*", "", detail)


def _unexpected(token: str) -> str:
    if token == "<EOF>":
        return "the expression ends too early"
    hint = _WORD_HINTS.get(token)
    return f"unexpected `{token}`" + (f"; {hint}" if hint else "")


def _unreadable(source: str, offset: int) -> str:
    char = source[offset : offset + 1]
    if char in ("'", '"'):
        return _quote_problem(source, offset)
    hints = {
        "=": "use `==` to compare two values",
        "&": "use `&&` to require both conditions",
        "|": "use `||` to accept either condition",
    }
    return hints.get(char, f"unexpected character `{char}`")


def _quote_problem(source: str, offset: int) -> str:
    """Why the text starting at ``offset`` cannot be read: an unknown escape, or quotes
    that are never closed."""
    quote = source[offset]
    closing = quote * 3 if source.startswith(quote * 3, offset) else quote
    raw = source[offset - 1 : offset] in ("r", "R")
    position = offset + len(closing)
    while position < len(source):
        if source.startswith(closing, position):
            break
        char = source[position]
        if char == "\n" and len(closing) == 1:
            return (
                "unbalanced quotes: text in quotes must end on the same line "
                "(use ''' for text over several lines)"
            )
        if char == "\\" and not raw:
            escape = _ESCAPE.match(source, position)
            if escape is None:
                shown = source[position : position + 2]
                return f"`{shown}` is not a known escape in text; write `\\\\` for a backslash"
            position = escape.end()
            continue
        position += 1
    return "unbalanced quotes: the text starting here is never closed"


# --- Parsing into a small tree whose nodes know where they are --------------------------


@dataclass(frozen=True)
class _Node:
    start: int
    end: int


@dataclass(frozen=True)
class _Literal(_Node):
    type: CelType
    text: str


@dataclass(frozen=True)
class _Ident(_Node):
    name: str


@dataclass(frozen=True)
class _Rooted(_Node):
    """``.name`` or ``.name(...)``: CEL's root scope, which the interpreter never resolves."""

    name: str


@dataclass(frozen=True)
class _Select(_Node):
    operand: _Node
    field: str
    field_start: int


@dataclass(frozen=True)
class _Call(_Node):
    target: _Node | None  # the receiver of x.f(...), None for f(...)
    name: str
    name_start: int
    args: tuple[_Node, ...]


@dataclass(frozen=True)
class _Index(_Node):
    operand: _Node
    index: _Node


@dataclass(frozen=True)
class _Unary(_Node):
    op: str
    operand: _Node


@dataclass(frozen=True)
class _Binary(_Node):
    op: str
    op_start: int
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Conditional(_Node):
    condition: _Node
    then: _Node
    otherwise: _Node


@dataclass(frozen=True)
class _List(_Node):
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Map(_Node):
    entries: tuple[tuple[_Node, _Node], ...]


@dataclass(frozen=True)
class _Message(_Node):
    name: _Node


@cache
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("cel.lark")).read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _trees(children: Sequence[Tree[Token] | Token]) -> list[_Node]:
    return [_build(child) for child in children if isinstance(child, Tree)]


def _token(child: Tree[Token] | Token) -> Token:
    assert isinstance(child, Token)
    return child


def _build(tree: Tree[Token]) -> _Node:
    """Turn a Lark tree (``cel.lark``'s rule names) into typed nodes."""
    start, end, kids = tree.meta.start_pos, tree.meta.end_pos, tree.children
    match tree.data:
        case "conditional":
            condition, then, otherwise = _trees(kids)
            return _Conditional(start, end, condition, then, otherwise)
        case "binary":
            op = _token(kids[1])
            left, right = _trees(kids)
            return _Binary(start, end, str(op), _pos(op), left, right)
        case "logical_not" | "negate":
            return _unary_chain(tree)
        case "select":
            field = _token(kids[1])
            return _Select(start, end, _build_child(kids[0]), str(field), _pos(field))
        case "method_call":
            name = _token(kids[1])
            args = tuple(_trees(kids[2:]))
            return _Call(start, end, _build_child(kids[0]), str(name), _pos(name), args)
        case "call":
            name = _token(kids[0])
            return _Call(start, end, None, str(name), _pos(name), tuple(_trees(kids)))
        case "index":
            operand, index = _trees(kids)
            return _Index(start, end, operand, index)
        case "ident":
            return _Ident(start, end, str(_token(kids[0])))
        case "rooted":
            return _Rooted(start, end, str(_token(kids[0])))
        case "list":
            return _List(start, end, tuple(_trees(kids)))
        case "map":
            entries = [_trees(entry.children) for entry in kids if isinstance(entry, Tree)]
            return _Map(start, end, tuple((key, value) for key, value in entries))
        case "message":
            return _Message(start, end, _build_child(kids[0]))
        case "literal":
            return _literal(_token(kids[0]))
    raise ValueError(f"unexpected CEL tree {tree.data}")


def _build_child(child: Tree[Token] | Token) -> _Node:
    assert isinstance(child, Tree)
    return _build(child)


def _pos(token: Token) -> int:
    return token.start_pos or 0


def _unary_chain(tree: Tree[Token]) -> _Node:
    """``!!x`` is one Lark node with two operators; nest them, innermost last."""
    *ops, operand = tree.children
    node = _build_child(operand)
    for op in reversed(ops):
        token = _token(op)
        node = _Unary(_pos(token), node.end, str(token), node)
    return node


_LITERAL_TYPES = {
    "INT": INT,
    "UINT": UINT,
    "FLOAT": DOUBLE,
    "STRING": STRING,
    "BYTES": BYTES,
    "TRUE": BOOL,
    "FALSE": BOOL,
    "NULL": NULL,
}


def _literal(token: Token) -> _Literal:
    start = _pos(token)
    return _Literal(start, start + len(token), _LITERAL_TYPES[token.type], str(token))


def _string_value(node: _Node) -> str | None:
    """The text of a plain quoted string literal (no prefix, no escapes), else None."""
    if not isinstance(node, _Literal) or node.type != STRING or "\\" in node.text:
        return None
    quote = node.text[:3] if node.text[:3] in ("'''", '"""') else node.text[:1]
    if quote not in ("'", '"', "'''", '"""'):
        return None
    return node.text[len(quote) : -len(quote)]


# --- Types in a marketer's words ---------------------------------------------------------

_WORDS = {
    "int": ("a number", "numbers"),
    "uint": ("a number", "numbers"),
    "double": ("a number", "numbers"),
    "string": ("text", "text"),
    "bool": ("true/false", "true/false values"),
    "bytes": ("bytes", "bytes"),
    "null": ("null", "nulls"),
    "timestamp": ("a timestamp", "timestamps"),
    "duration": ("a duration", "durations"),
    "type": ("a type", "types"),
    "dyn": ("any value", "values of any kind"),
}
_PRECISE = {"int": "an int", "uint": "a uint", "double": "a double", "string": "a string"}


def _words(t: CelType) -> str:
    if isinstance(t, ListType):
        return "a list" if is_dyn(t.elem) else f"a list of {_plural(t.elem)}"
    if isinstance(t, MapType | StructType):
        return "a map"
    return _WORDS.get(t.name, (f"a {t.name}", ""))[0]


def _plural(t: CelType) -> str:
    if isinstance(t, ListType):
        return "lists"
    if isinstance(t, MapType | StructType):
        return "maps"
    return _WORDS.get(t.name, ("", f"{t.name} values"))[1]


def _precise(t: CelType) -> str:
    """Words that tell an int from a double, for where that difference matters."""
    if isinstance(t, ListType | MapType):
        return f"a {t}"
    return _PRECISE.get(t.name, _words(t))


def _word_pair(a: CelType, b: CelType) -> tuple[str, str]:
    """Plain words for two types, precise ones when plain words would not tell them apart."""
    words = _words(a), _words(b)
    return (_precise(a), _precise(b)) if words[0] == words[1] else words


def _expect_message(result: CelType, expect: CelType) -> str:
    if expect == BOOL:
        return f"a condition must be true or false; this expression gives {_words(result)}"
    wanted, got = _word_pair(expect, result)
    return f"this expression must give {wanted}; it gives {got}"


def _kind(t: CelType) -> str:
    if isinstance(t, ListType):
        return "list"
    if isinstance(t, MapType | StructType):
        return "map"
    return t.name


def _kind_words(kind: str) -> str:
    return _WORDS[kind][0] if kind in _WORDS else f"a {kind}"


def _is_number(t: CelType) -> bool:
    return t in NUMBERS


def _did_you_mean(name: str, known: Sequence[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"; did you mean `{close[0]}`?" if close else ""


def _has_example(env: Environment) -> str:
    """A map key as found in this environment (profile.traits.email), for has() advice."""
    for name in sorted(env.variables):
        var = env.variables[name]
        if isinstance(var, StructType):
            for field, field_type in var.fields.items():
                if isinstance(field_type, MapType):
                    return f"{name}.{field}.email"
    return "map.key"


# --- Functions the interpreter provides ----------------------------------------------------

_Overloads = tuple[tuple[tuple[str, ...], CelType], ...]  # (argument kinds, result)
_SIZEABLE: _Overloads = tuple(((kind,), INT) for kind in ("string", "bytes", "list", "map"))
_TEXT_TEST: _Overloads = ((("string", "string"), BOOL),)
_TIME_PART: _Overloads = ((("timestamp",), INT),)
_TIME_OR_DURATION_PART: _Overloads = ((("timestamp",), INT), (("duration",), INT))
_NUMERIC_SOURCES = ("int", "uint", "double", "string")

# Receiver style, x.f(...): the receiver is the first argument kind.
_METHODS: dict[str, _Overloads] = {
    "size": _SIZEABLE,
    "startsWith": _TEXT_TEST,
    "endsWith": _TEXT_TEST,
    "contains": _TEXT_TEST,
    "matches": _TEXT_TEST,
    "getFullYear": _TIME_PART,
    "getMonth": _TIME_PART,
    "getDayOfYear": _TIME_PART,
    "getDate": _TIME_PART,
    "getDayOfMonth": _TIME_PART,
    "getDayOfWeek": _TIME_PART,
    "getHours": _TIME_OR_DURATION_PART,
    "getMinutes": _TIME_OR_DURATION_PART,
    "getSeconds": _TIME_OR_DURATION_PART,
    "getMilliseconds": _TIME_OR_DURATION_PART,
}
_GLOBALS: dict[str, _Overloads] = {
    "size": _SIZEABLE,
    "int": tuple(((kind,), INT) for kind in _NUMERIC_SOURCES),
    "uint": tuple(((kind,), UINT) for kind in _NUMERIC_SOURCES),
    "double": tuple(((kind,), DOUBLE) for kind in _NUMERIC_SOURCES),
    "string": tuple(
        ((kind,), STRING) for kind in (*_NUMERIC_SOURCES, "bytes", "timestamp", "duration")
    ),
    "bytes": ((("string",), BYTES), (("bytes",), BYTES)),
    "timestamp": ((("string",), TIMESTAMP), (("timestamp",), TIMESTAMP)),
    "duration": ((("string",), DURATION), (("duration",), DURATION)),
    "dyn": ((("any",), DYN),),
    "type": ((("any",), TYPE),),
}
_CONDITION_MACROS = ("all", "exists", "exists_one", "existsOne", "filter")
_MACROS = (*_CONDITION_MACROS, "map")
# Bare names the interpreter resolves to type values, as in type(x) == int.
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "string", "bytes", "bool", "list", "map", "null_type", "type"}
)
_ORDERED = (STRING, BOOL, BYTES, TIMESTAMP, DURATION)
_MAP_KEYS = (INT, UINT, BOOL, STRING)
_ARITHMETIC_VERBS = {
    "+": "add {l} and {r}",
    "-": "subtract {r} from {l}",
    "*": "multiply {l} by {r}",
    "/": "divide {l} by {r}",
    "%": "take the remainder of {l} divided by {r}",
}
_TIME_ARITHMETIC = {
    ("+", TIMESTAMP, DURATION): TIMESTAMP,
    ("+", DURATION, DURATION): DURATION,
    ("-", TIMESTAMP, TIMESTAMP): DURATION,
    ("-", TIMESTAMP, DURATION): TIMESTAMP,
    ("-", DURATION, DURATION): DURATION,
}


def _one_of(words: Sequence[str]) -> str:
    unique = list(dict.fromkeys(words))
    return unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " or " + unique[-1]


def _count(n: int) -> str:
    return "no values" if n == 0 else ("1 value" if n == 1 else f"{n} values")


def _given(n: int) -> str:
    return f"{n} {'was' if n == 1 else 'were'} given"


def _fits(kind: str, t: CelType | None) -> bool:
    return t is None or is_dyn(t) or kind in ("any", _kind(t))


def _equatable(a: CelType, b: CelType) -> bool:
    """Can ``a == b`` ever be true (the interpreter compares numbers across kinds)?"""
    if is_dyn(a) or is_dyn(b) or NULL in (a, b) or (_is_number(a) and _is_number(b)):
        return True
    if isinstance(a, ListType) and isinstance(b, ListType):
        return _equatable(a.elem, b.elem)
    if isinstance(a, MapType | StructType) and isinstance(b, MapType | StructType):
        return True
    return a == b


def _common(a: CelType | None, b: CelType | None) -> CelType | None:
    """The type of a value that is either ``a`` or ``b`` (lists and ternaries)."""
    if a is None or b is None:
        return None
    if a == b and not isinstance(a, ListType | MapType):
        return a
    if isinstance(a, ListType) and isinstance(b, ListType):
        return list_of(_common(a.elem, b.elem) or DYN)
    if isinstance(a, MapType) and isinstance(b, MapType):
        return map_of(_common(a.value, b.value) or DYN, _common(a.key, b.key) or DYN)
    return DYN


def _common_of(types: Sequence[CelType | None]) -> CelType:
    result: CelType | None = types[0] if types else DYN
    for t in types[1:]:
        result = _common(result, t)
    return result or DYN


# --- The checker ----------------------------------------------------------------------------


class _Checker:
    """Walks the tree once, computing each node's type (None when an error already
    made it unknown) and collecting problems and references."""

    def __init__(self, source: str, env: Environment) -> None:
        self.source = source
        self.env = env
        self.problems: dict[tuple[int, str], CelProblem] = {}
        self.references: list[Reference] = []
        self.scopes: list[dict[str, CelType]] = []

    def report(self, offset: int, message: str) -> None:
        self.problems.setdefault((offset, message), _problem(self.source, offset, message))

    def sorted_problems(self) -> list[CelProblem]:
        return [self.problems[key] for key in sorted(self.problems)]

    def sorted_references(self) -> list[Reference]:
        return sorted(self.references, key=lambda ref: (ref.start, ref.end))

    def text(self, node: _Node) -> str:
        return " ".join(self.source[node.start : node.end].split())

    def check(self, node: _Node) -> CelType | None:
        match node:
            case _Literal():
                return node.type
            case _Ident():
                return self.ident(node)
            case _Select():
                return self.select_chain(node)
            case _Call():
                return self.call(node)
            case _Index():
                return self.index(node)
            case _Unary():
                return self.unary(node)
            case _Binary():
                return self.binary(node)
            case _Conditional():
                return self.conditional(node)
            case _List():
                return list_of(_common_of([self.check(item) for item in node.items]))
            case _Map():
                return self.map_literal(node)
            case _Rooted():
                self.report(
                    node.start,
                    f"a name cannot start with a dot: write `{node.name}`, not `.{node.name}`",
                )
            case _Message():
                self.report(
                    node.start,
                    f"rules cannot build messages such as `{self.text(node)}`; "
                    "use a map such as {'key': value} instead",
                )
        return None

    # Names and fields.

    def bound(self, node: _Ident) -> CelType | None:
        for scope in reversed(self.scopes):
            if node.name in scope:
                return scope[node.name]
        return None

    def is_variable(self, node: _Node) -> bool:
        return (
            isinstance(node, _Ident)
            and self.bound(node) is None
            and node.name in self.env.variables
        )

    def ident(self, node: _Ident, *, as_operand: bool = False) -> CelType | None:
        bound = self.bound(node)
        if bound is not None:
            return bound
        var = self.env.variables.get(node.name)
        if var is None:
            if node.name in _TYPE_NAMES:
                return TYPE
            self.unknown_name(node)
            return None
        if isinstance(var, StructType):
            if as_operand:
                return var
            self.report(node.start, self.bare_struct_message(node.name, var))
            return None
        self.references.append(Reference(node.name, (), node.start, node.end, var))
        return var

    def unknown_name(self, node: _Ident) -> None:
        names = sorted(self.env.variables)
        hint = _did_you_mean(node.name, names) or "."
        self.report(
            node.start, f"unknown name `{node.name}`{hint} Rules can read: {', '.join(names)}"
        )

    @staticmethod
    def bare_struct_message(name: str, var: StructType) -> str:
        first = next(iter(var.fields), None)
        if first is None:
            return f"`{name}` cannot be used on its own"
        return f"use a field of `{name}`, such as `{name}.{first}`"

    def select_chain(self, node: _Select) -> CelType | None:
        """``a.b.c``: fields of a top-level struct are references; the rest are lookups."""
        selects: list[_Select] = []
        root: _Node = node
        while isinstance(root, _Select):
            selects.append(root)
            root = root.operand
        selects.reverse()
        if isinstance(root, _Ident) and self.is_variable(root):
            result, rest = self.struct_path(root, selects)
        else:
            result, rest = self.check(root), selects
        for select in rest:
            result = self.select(result, select)
        return result

    def struct_path(
        self, root: _Ident, selects: list[_Select]
    ) -> tuple[CelType | None, list[_Select]]:
        """Follow struct fields from a top-level variable, recording the reference."""
        current = self.env.variables[root.name]
        path: list[str] = []
        end = root.end
        taken = 0
        while taken < len(selects) and isinstance(current, StructType):
            select = selects[taken]
            field_type = current.fields.get(select.field)
            if field_type is None:
                self.unknown_field(select, current)
                self.add_reference(root, path, end, current)
                return None, []
            path.append(select.field)
            end = select.field_start + len(select.field)
            current = field_type
            taken += 1
        self.add_reference(root, path, end, current)
        return current, selects[taken:]

    def add_reference(self, root: _Ident, path: list[str], end: int, t: CelType) -> None:
        if path or not isinstance(t, StructType):
            self.references.append(Reference(root.name, tuple(path), root.start, end, t))

    def unknown_field(self, select: _Select, struct: StructType) -> None:
        fields = list(struct.fields)
        hint = _did_you_mean(select.field, fields)
        if not hint:
            hint = f"; it has: {', '.join(sorted(fields))}" if fields else ""
        self.report(
            select.field_start,
            f"`{self.text(select.operand)}` has no field `{select.field}`{hint}",
        )

    def select(self, operand: CelType | None, select: _Select) -> CelType | None:
        if operand is None or is_dyn(operand):
            return operand
        if isinstance(operand, StructType):
            field_type = operand.fields.get(select.field)
            if field_type is None:
                self.unknown_field(select, operand)
            return field_type
        if isinstance(operand, MapType):
            return operand.value
        self.report(
            select.field_start,
            f"`{self.text(select.operand)}` is {_words(operand)}, "
            f"so it has no field `{select.field}`",
        )
        return None

    # Operators.

    def unary(self, node: _Unary) -> CelType | None:
        operand = self.check(node.operand)
        if operand is None or is_dyn(operand):
            return BOOL if node.op == "!" else operand
        if node.op == "!":
            if operand != BOOL:
                self.report(
                    node.start,
                    f"`!` needs true/false, but `{self.text(node.operand)}` is {_words(operand)}",
                )
            return BOOL
        if operand in (INT, DOUBLE):
            return operand
        if operand == UINT:
            message = (
                f"a uint cannot be negative: convert it first, e.g. -int({self.text(node.operand)})"
            )
        else:
            message = f"only numbers can be negative; `{self.text(node.operand)}` is "
            message += _words(operand)
        self.report(node.start, message)
        return None

    def binary(self, node: _Binary) -> CelType | None:
        if node.op in ("&&", "||"):
            return self.logical(node)
        left, right = self.check(node.left), self.check(node.right)
        if node.op in _ARITHMETIC_VERBS:
            return self.arithmetic(node, left, right)
        if left is not None and right is not None:
            if node.op == "in":
                self.membership(node, left, right)
            elif node.op in ("==", "!="):
                self.equality(node, left, right)
            else:
                self.ordering(node, left, right)
        return BOOL

    def logical(self, node: _Binary) -> CelType:
        for side in (node.left, node.right):
            t = self.check(side)
            if t is not None and not is_dyn(t) and t != BOOL:
                self.report(
                    side.start,
                    f"`{node.op}` joins conditions that are true or false; "
                    f"`{self.text(side)}` is {_words(t)}",
                )
        return BOOL

    def arithmetic(
        self, node: _Binary, left: CelType | None, right: CelType | None
    ) -> CelType | None:
        if left is None or right is None:
            return None
        if is_dyn(left) or is_dyn(right):
            return DYN
        result = self.arithmetic_result(node.op, left, right)
        if result is None:
            self.report(node.op_start, self.arithmetic_message(node, left, right))
        return result

    @staticmethod
    def arithmetic_result(op: str, left: CelType, right: CelType) -> CelType | None:
        if _is_number(left) and left == right:
            return None if op == "%" and left == DOUBLE else left
        if op == "+" and left == right and left in (STRING, BYTES):
            return left
        if op == "+" and isinstance(left, ListType) and isinstance(right, ListType):
            same = _equatable(left.elem, right.elem)
            return list_of(_common(left.elem, right.elem) or DYN) if same else None
        return _TIME_ARITHMETIC.get((op, left, right))

    def arithmetic_message(self, node: _Binary, left: CelType, right: CelType) -> str:
        names = [_precise(t) if _is_number(t) else _words(t) for t in (left, right)]
        if names[0] == names[1] and isinstance(left, ListType):
            names = [_precise(left), _precise(right)]
        message = "cannot " + _ARITHMETIC_VERBS[node.op].format(l=names[0], r=names[1])
        if not (_is_number(left) and _is_number(right)):
            return message
        target = DOUBLE if DOUBLE in (left, right) and node.op != "%" else INT
        sides = [
            self.text(side) if t == target else f"{target}({self.text(side)})"
            for side, t in ((node.left, left), (node.right, right))
        ]
        example = f"{sides[0]} {node.op} {sides[1]}"
        if node.op == "%" and DOUBLE in (left, right):
            return f"{message}: `%` works on whole numbers only; convert, e.g. {example}"
        return f"{message}: convert one side, e.g. {example}"

    def ordering(self, node: _Binary, left: CelType, right: CelType) -> None:
        if is_dyn(left) or is_dyn(right) or (_is_number(left) and _is_number(right)):
            return
        if left == right and left in _ORDERED:
            return
        a, b = _word_pair(left, right)
        if a == b:
            message = f"{_plural(left)} cannot be compared with `{node.op}`"
        else:
            message = f"cannot compare {a} with {b}"
        self.report(node.op_start, message)

    def equality(self, node: _Binary, left: CelType, right: CelType) -> None:
        if not _equatable(left, right):
            a, b = _word_pair(left, right)
            self.report(node.op_start, f"cannot compare {a} with {b}: they are never equal")

    def membership(self, node: _Binary, left: CelType, right: CelType) -> None:
        container = self.text(node.right)
        if is_dyn(right):
            return
        if isinstance(right, ListType):
            if not _equatable(left, right.elem):
                self.report(
                    node.op_start,
                    f"`{container}` holds {_plural(right.elem)}, "
                    f"so it never contains {_words(left)}",
                )
            return
        if isinstance(right, MapType | StructType):
            key = right.key if isinstance(right, MapType) else STRING
            if not _equatable(left, key):
                self.report(
                    node.op_start,
                    f"the keys of `{container}` are {_plural(key)}, "
                    f"so it never contains {_words(left)}",
                )
            return
        self.report(
            node.op_start,
            f"`in` needs a list or a map on its right; `{container}` is {_words(right)}",
        )

    def conditional(self, node: _Conditional) -> CelType | None:
        condition = self.check(node.condition)
        if condition is not None and not is_dyn(condition) and condition != BOOL:
            self.report(
                node.condition.start,
                "the condition before `?` must be true or false; "
                f"`{self.text(node.condition)}` is {_words(condition)}",
            )
        return _common(self.check(node.then), self.check(node.otherwise))

    def index(self, node: _Index) -> CelType | None:
        operand, index = self.check(node.operand), self.check(node.index)
        if operand is None or is_dyn(operand):
            return operand
        if isinstance(operand, ListType):
            if index is not None and not is_dyn(index) and index not in (INT, UINT):
                self.report(
                    node.index.start,
                    "a position in a list must be a whole number; "
                    f"`{self.text(node.index)}` is {_words(index)}",
                )
            return operand.elem
        if isinstance(operand, MapType):
            self.check_key(node, operand.key, index)
            return operand.value
        if isinstance(operand, StructType):
            return self.struct_index(node, operand, index)
        self.report(
            node.start,
            f"`{self.text(node.operand)}` is {_words(operand)}, so nothing can be picked "
            "out of it with [ ]",
        )
        return None

    def check_key(self, node: _Index, key: CelType, index: CelType | None) -> None:
        if index is not None and not assignable(index, key):
            self.report(
                node.index.start,
                f"the keys of `{self.text(node.operand)}` are {_plural(key)}, not {_words(index)}",
            )

    def struct_index(self, node: _Index, struct: StructType, index: CelType | None) -> CelType:
        """``item['sku']``: a struct is a map at run time, so a literal key is a field."""
        self.check_key(node, STRING, index)
        name = _string_value(node.index)
        if name is None:
            return DYN
        field_type = struct.fields.get(name)
        if field_type is None:
            hint = _did_you_mean(name, list(struct.fields))
            self.report(
                node.index.start, f"`{self.text(node.operand)}` has no field `{name}`{hint}"
            )
            return DYN
        return field_type

    def map_literal(self, node: _Map) -> CelType:
        keys: list[CelType | None] = []
        values: list[CelType | None] = []
        for key_node, value_node in node.entries:
            key = self.check(key_node)
            if key is not None and not is_dyn(key) and key not in _MAP_KEYS:
                self.report(
                    key_node.start,
                    f"map keys must be text, whole numbers or true/false, not {_words(key)}",
                )
            keys.append(key)
            values.append(self.check(value_node))
        return map_of(_common_of(values), _common_of(keys))

    # Calls, functions and macros.

    def call(self, node: _Call) -> CelType | None:
        if node.target is None:
            if node.name == "has":
                return self.has(node)
            return self.global_call(node)
        if node.name in _MACROS:
            return self.macro(node, node.target)
        return self.method_call(node, node.target)

    def has(self, node: _Call) -> CelType | None:
        if len(node.args) != 1 or not isinstance(node.args[0], _Select):
            example = _has_example(self.env)
            self.report(node.start, f"has() takes one field to test, e.g. has({example})")
            return BOOL
        field = node.args[0]
        operand = self.operand(field.operand)
        if operand is None or is_dyn(operand) or isinstance(operand, MapType):
            return BOOL
        if isinstance(operand, StructType):
            if field.field not in operand.fields:
                self.unknown_field(field, operand)
            else:
                self.report(
                    field.start,
                    f"has() only tests map keys such as {_has_example(self.env)}; "
                    f"`{self.text(field)}` is always present, so compare it with a value "
                    "instead",
                )
            return BOOL
        self.report(
            field.start,
            f"has() only tests map keys; `{self.text(field.operand)}` is {_words(operand)}",
        )
        return BOOL

    def operand(self, node: _Node) -> CelType | None:
        """The type of ``node`` where a field is selected from it (a bare struct is fine)."""
        if isinstance(node, _Ident):
            return self.ident(node, as_operand=True)
        return self.check(node)

    def macro(self, node: _Call, target: _Node) -> CelType | None:
        receiver = self.check(target)
        arity = (2, 3) if node.name == "map" else (2,)
        variable = node.args[0] if node.args else None
        if len(node.args) not in arity or not isinstance(variable, _Ident):
            self.report(node.name_start, self.macro_usage(node.name))
            return None
        self.check_variable_name(variable)
        self.scopes.append({variable.name: self.iteration_type(node, target, receiver)})
        try:
            return self.macro_body(node, receiver)
        finally:
            self.scopes.pop()

    @staticmethod
    def macro_usage(name: str) -> str:
        if name == "map":
            return (
                "`map` takes a name and a value, e.g. list.map(x, x * 2), "
                "or a name, a condition and a value"
            )
        return f"`{name}` takes a name and a condition, e.g. list.{name}(x, x > 0)"

    def check_variable_name(self, variable: _Ident) -> None:
        if variable.name not in self.env.variables:
            return
        candidates = (variable.name[0], "x", "y", "it")
        free = (c for c in candidates if c not in self.env.variables and c != variable.name)
        other = next(free, "item")
        self.report(
            variable.start,
            f"`{variable.name}` is already a name rules can read; "
            f"pick another name such as `{other}`",
        )

    def iteration_type(self, node: _Call, target: _Node, receiver: CelType | None) -> CelType:
        if receiver is None or is_dyn(receiver):
            return DYN
        if isinstance(receiver, ListType):
            return receiver.elem
        if isinstance(receiver, MapType):
            return receiver.key
        if isinstance(receiver, StructType):
            return STRING
        self.report(
            node.name_start,
            f"`{node.name}` works on a list or a map; `{self.text(target)}` is {_words(receiver)}",
        )
        return DYN

    def macro_body(self, node: _Call, receiver: CelType | None) -> CelType | None:
        *conditions, last = node.args[1:]
        if node.name in _CONDITION_MACROS:
            conditions.append(last)
        for condition in conditions:
            self.expect_condition(node.name, condition)
        if node.name == "map":
            return list_of(self.check(last) or DYN)
        if node.name != "filter":
            return BOOL
        if isinstance(receiver, ListType):
            return receiver
        if isinstance(receiver, MapType):
            return list_of(receiver.key)
        return list_of(STRING) if isinstance(receiver, StructType) else list_of(DYN)

    def expect_condition(self, name: str, condition: _Node) -> None:
        t = self.check(condition)
        if t is not None and not is_dyn(t) and t != BOOL:
            self.report(
                condition.start,
                f"the condition in `{name}` must be true or false; "
                f"`{self.text(condition)}` is {_words(t)}",
            )

    def global_call(self, node: _Call) -> CelType | None:
        args = [self.check(arg) for arg in node.args]
        declared = self.env.functions.get(node.name)
        if declared is not None:
            return self.declared_call(node, declared, args)
        overloads = _GLOBALS.get(node.name)
        if overloads is None and node.name in _METHODS and node.args:
            receiver, *rest = (self.text(arg) for arg in node.args)
            self.report(
                node.name_start,
                f"`{node.name}` is written after a value: "
                f"write {receiver}.{node.name}({', '.join(rest)})",
            )
            return _METHODS[node.name][0][1]
        if overloads is None:
            known = sorted({*_GLOBALS, *self.env.functions, "has"})
            hint = _did_you_mean(node.name, known, cutoff=0.7)
            self.report(node.name_start, f"unknown function `{node.name}`{hint}")
            return None
        return self.overloaded_call(node, overloads, list(node.args), args)

    def method_call(self, node: _Call, target: _Node) -> CelType | None:
        receiver = self.check(target)
        args = [self.check(arg) for arg in node.args]
        if node.name in self.env.functions:
            written = ", ".join(self.text(n) for n in (target, *node.args))
            self.report(
                node.name_start,
                f"`{node.name}` is not written after a value: write {node.name}({written})",
            )
            return self.env.functions[node.name][1]
        overloads = _METHODS.get(node.name)
        if overloads is None:
            known = sorted({*_METHODS, *_MACROS})
            hint = _did_you_mean(node.name, known, cutoff=0.7)
            self.report(node.name_start, f"unknown function `{node.name}`{hint}")
            return None
        return self.overloaded_call(node, overloads, [target, *node.args], [receiver, *args])

    def overloaded_call(
        self,
        node: _Call,
        overloads: _Overloads,
        arg_nodes: list[_Node],
        args: list[CelType | None],
    ) -> CelType | None:
        """Pick the overload the arguments fit, or say which argument does not fit."""
        receiver = 1 if node.target is not None else 0
        sized = [(kinds, result) for kinds, result in overloads if len(kinds) == len(args)]
        if not sized:
            expected = len(overloads[0][0]) - receiver
            self.report(
                node.name_start,
                f"`{node.name}` takes {_count(expected)}, but {_given(len(args) - receiver)}",
            )
            return None
        fitting = [result for kinds, result in sized if all(map(_fits, kinds, args))]
        if fitting:
            return fitting[0] if len(set(fitting)) == 1 else DYN
        self.report_misfit(node, sized, arg_nodes, args)
        results = {result for _, result in sized}
        return results.pop() if len(results) == 1 else None

    def report_misfit(
        self,
        node: _Call,
        overloads: Sequence[tuple[tuple[str, ...], CelType]],
        arg_nodes: list[_Node],
        args: list[CelType | None],
    ) -> None:
        for position, (arg_node, arg) in enumerate(zip(arg_nodes, args, strict=True)):
            kinds = [kinds[position] for kinds, _ in overloads]
            if arg is None or any(_fits(kind, arg) for kind in kinds):
                continue
            wanted = _one_of([_kind_words(kind) for kind in kinds])
            if node.target is not None and position == 0:
                message = f"`{node.name}` works on {wanted}; `{self.text(arg_node)}` is "
            else:
                message = f"`{node.name}` needs {wanted} here, not "
            self.report(arg_node.start, message + _words(arg))
            return

    def declared_call(
        self,
        node: _Call,
        declared: tuple[tuple[CelType, ...], CelType],
        args: list[CelType | None],
    ) -> CelType:
        params, result = declared
        if len(params) != len(args):
            self.report(
                node.name_start,
                f"`{node.name}` takes {_count(len(params))}, but {_given(len(args))}",
            )
            return result
        for arg_node, arg, param in zip(node.args, args, params, strict=True):
            if arg is not None and not assignable(arg, param):
                wanted, got = _word_pair(param, arg)
                self.report(arg_node.start, f"`{node.name}` needs {wanted} here, not {got}")
        return result
