"""YAML rule files checked against the msgspec Structs of ``engine.rules.model``.

A marketer who saves a rule file must be told every problem of it at once,
each as ``file:line:col: message`` in plain language, so that one round of
fixes is enough. ``msgspec.convert`` stops at the first error and knows
nothing of lines and columns, and ``yaml.safe_load`` forgets where each value
came from. So ``parse`` keeps PyYAML's node marks next to the plain values,
and ``check`` walks those values against ``msgspec.inspect.type_info`` of the
Struct, collecting every problem with its position. Only once a file has no
problems does ``to_struct`` hand the values to ``msgspec.convert``.

Semantic checks (CEL, event type names, exactly one trigger kind) are the
caller's; ``Document.mark`` and ``Document.locate`` give them positions too.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

import msgspec
import msgspec.inspect as mi
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.rules.durations import DURATION_HELP

Path = tuple[str | int, ...]
T = TypeVar("T", bound=msgspec.Struct)

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NO_KEY = object()  # a key that cannot be one (a list, a merge)
_BREAKS = "\r\n\x85\u2028\u2029"
_HEX_ESCAPE_LENGTHS: dict[str, int] = yaml.scanner.Scanner.ESCAPE_CODES


@dataclass(frozen=True, order=True)
class Problem:
    """One problem of a file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class Document:
    """A parsed YAML document: plain Python values plus where each came from."""

    def __init__(
        self,
        value: Any,
        text: str,
        nodes: dict[tuple[object, ...], Node],
        keys: dict[tuple[object, ...], Node],
    ) -> None:
        self.value = value
        self._text = text
        self._nodes = nodes  # path -> the node of the value there
        self._keys = keys  # path -> the node of the key of that mapping entry

    def mark(self, path: Path) -> tuple[int, int]:
        """(line, column), 1-based, of the value at ``path``, or of its nearest existing parent."""
        while path not in self._nodes:
            path = path[:-1]
        return _one_based(self._nodes[path].start_mark)

    def key_mark(self, path: Path) -> tuple[int, int]:
        """(line, column) of the key of the mapping entry at ``path`` (for "unknown key")."""
        key = self._keys.get(path)
        return self.mark(path) if key is None else _one_based(key.start_mark)

    def locate(self, path: Path, offset: int) -> tuple[int, int]:
        """(line, column) in the file of character ``offset`` of the text value at ``path``.

        An offset at or past the end gives the position just after the value's
        last character; a list or mapping gives ``mark(path)``.
        """
        node = self._nodes.get(path)
        if not isinstance(node, ScalarNode):
            return self.mark(path)
        indices = _source_indices(self._text, node)
        index = indices[max(0, min(offset, len(node.value)))]
        mark = node.start_mark
        return _position(self._text, index, mark.index, mark.line, mark.column)


def parse(text: str, file: str) -> tuple[Document | None, list[Problem]]:
    """The document of a YAML text, and its problems: syntax, duplicate keys, not a mapping."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        return None, [_syntax_problem(error, file)]
    except yaml.reader.ReaderError as error:
        line, column = _position(text, error.position)
        message = f"the file holds a character YAML does not allow (#x{error.character:04x})"
        return None, [Problem(file, line, column, message)]
    if root is None:
        return None, [Problem(file, 1, 1, "the file is empty")]
    if not isinstance(root, MappingNode):
        line, column = _one_based(root.start_mark)
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        message = f"the file must hold `key: value` lines at the top, not {kind}"
        return None, [Problem(file, line, column, message)]
    builder = _Builder(file)
    value = builder.build(root, ())
    document = Document(value, text, builder.nodes, builder.keys)
    return document, _in_file_order(builder.problems)


def check(doc: Document, kind: type[msgspec.Struct], file: str, path: Path = ()) -> list[Problem]:
    """Every problem of the value at ``path`` (which must exist) against the Struct ``kind``,
    in file order."""
    walk = _Walk(doc, file, _label_of(kind), _declared_literals(kind))
    walk.check(path, mi.type_info(kind))
    return _in_file_order(walk.problems)


def to_struct(doc: Document, kind: type[T], path: Path = ()) -> T:
    """The Struct for the value at ``path``; check it first, this raises on the first problem."""
    return msgspec.convert(_value_at(doc.value, path), kind, strict=True, from_attributes=False)


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """Each problem once, by position; those at one position in the order they were found."""
    return sorted(dict.fromkeys(problems), key=lambda p: (p.line, p.column))


# Parsing ------------------------------------------------------------------------

# PyYAML's problem texts, in plain words: (pattern, point at the context mark, message).
_SYNTAX_MESSAGES: tuple[tuple[str, bool, str], ...] = (
    (
        r"mapping values are not allowed here",
        False,
        "unexpected `:` here: indent this line like the one above it, "
        "or put a value that contains `: ` in quotes",
    ),
    (
        r"expected <block end>, but found '-'",
        False,
        "a list item (`- `) cannot start here: check the indentation",
    ),
    (
        r"expected <block end>, but found '<scalar>'",
        False,
        "unexpected text after a value: check the quotes and the indentation",
    ),
    (
        r"expected <block end>",
        False,
        "this line is not indented like the lines above it",
    ),
    (
        r"found unexpected end of stream",
        True,
        "this quoted text is never closed: add the closing quote",
    ),
    (
        r"found character '\\t' that cannot start any token",
        False,
        "a tab cannot indent YAML: use spaces",
    ),
    (
        r"found character '(.)' that cannot start any token",
        False,
        'a value cannot start with "{0}": put the value in quotes',
    ),
    (
        r"could not find expected ':'",
        True,
        "expected `key: value` here, but there is no `:`",
    ),
    (
        r"expected ',' or '\]'",
        True,
        "this `[` is never closed with `]` (or a `,` is missing between its items)",
    ),
    (
        r"expected ',' or '\}'",
        True,
        "this `{{` is never closed with `}}` (or a `,` is missing between its items)",
    ),
    (
        r"found undefined alias '(.*)'",
        False,
        "`*{0}` refers to `&{0}`, which is not defined above",
    ),
    (
        r"but found another document",
        False,
        "a file holds a single document: remove this `---` and what follows, "
        "or move it to its own file",
    ),
    (
        r"found unknown escape character '(.*)'",
        False,
        "`\\{0}` is not an escape in double quotes: write `\\\\` for a backslash, "
        "or use single quotes",
    ),
)


def _syntax_problem(error: yaml.MarkedYAMLError, file: str) -> Problem:
    problem = error.problem or ""
    message = f"YAML cannot read this: {problem}" + (f" ({error.context})" if error.context else "")
    mark = error.problem_mark or error.context_mark
    for pattern, at_context, plain in _SYNTAX_MESSAGES:
        found = re.search(pattern, problem)
        if found:
            message = plain.format(*found.groups())
            if at_context and error.context_mark is not None:
                mark = error.context_mark
            break
    line, column = _one_based(mark) if mark is not None else (1, 1)
    return Problem(file, line, column, message)


class _Builder:
    """Plain values from nodes, like ``yaml.safe_load``, recording each node by its path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.nodes: dict[tuple[object, ...], Node] = {}
        self.keys: dict[tuple[object, ...], Node] = {}
        self.problems: list[Problem] = []
        self._loader = yaml.SafeLoader("")
        self._open: set[int] = set()  # collections being built: an alias to one is a cycle

    def build(self, node: Node, path: tuple[object, ...]) -> Any:
        self.nodes[path] = node
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in self._open:
            self._problem(node, "this list or mapping holds an alias to itself")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: ScalarNode) -> Any:
        # Timestamps stay text (the model parses them); so do YAML 1.1's base-60
        # numbers, which is how a time such as 21:30 would otherwise be read.
        if node.tag == _TIMESTAMP_TAG or (node.tag in _NUMBER_TAGS and ":" in node.value):
            return node.value
        try:
            return self._loader.construct_object(node)
        except (yaml.constructor.ConstructorError, ValueError, KeyError):
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self._problem(node, f"cannot read {_show(node.value)} as `{tag}`: remove the tag")
            return node.value

    def _mapping(self, node: MappingNode, path: tuple[object, ...]) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if key is _NO_KEY:
                continue
            if key in result:
                text = _key_text(key)
                self._problem(
                    key_node, f"key `{text}` appears twice; the second would silently win"
                )
                self._forget((*path, key))
            self.keys[(*path, key)] = key_node
            result[key] = self.build(value_node, (*path, key))
        return result

    def _forget(self, prefix: tuple[object, ...]) -> None:
        """Drop the positions under a key given twice: only the second value is kept."""
        for table in (self.nodes, self.keys):
            for stale in [p for p in table if p[: len(prefix)] == prefix]:
                del table[stale]

    def _key(self, node: Node) -> Any:
        if node.tag == _MERGE_TAG:
            self._problem(node, "merging with `<<` is not supported here: write the keys out")
        elif not isinstance(node, ScalarNode):
            self._problem(node, "a key must be a single word or value, not a list or mapping")
        else:
            return self._scalar(node)
        return _NO_KEY

    def _problem(self, node: Node, message: str) -> None:
        line, column = _one_based(node.start_mark)
        self.problems.append(Problem(self.file, line, column, message))


# Checking -----------------------------------------------------------------------

_TIME_OF_DAY_HELP = "HH:MM on a 24-hour clock, e.g. 09:30"
_PULSE_NOUNS = {
    "duration": "a duration such as 30m or 7d",
    "time_of_day": "a time of day such as 09:30",
    "cel": "an expression",
    "event_type": "an event type",
    "timestamp": "a date or time such as 2026-12-01",
}
_NOUNS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (mi.IntType, "a whole number"),
    (mi.FloatType, "a number"),
    (mi.BoolType, "true or false"),
    (mi.ListType, "a list"),
    ((mi.DictType, mi.StructType), "a mapping (`key: value` lines)"),
    (mi.NoneType, "empty"),
)


@dataclass
class _Walk:
    """One ``check``: the document, what to call its top, and the problems found so far."""

    doc: Document
    file: str
    kind_label: str
    literals: dict[frozenset[object], tuple[object, ...]]
    problems: list[Problem] = field(default_factory=list)

    def check(self, path: Path, t: mi.Type) -> None:
        value = _value_at(self.doc.value, path)
        inner, meta = _unwrap(t)
        if isinstance(inner, mi.UnionType):
            self._union(path, inner, value)
        elif not _accepts(inner, value):
            self._mismatch(path, inner, meta, value)
        elif isinstance(inner, mi.StructType):
            self._struct(path, inner, value)
        elif isinstance(inner, mi.ListType):
            self._list(path, inner, value)
        elif isinstance(inner, mi.DictType):
            self._dict(path, inner, value)
        elif isinstance(inner, mi.LiteralType):
            self._literal(path, inner, value)
        elif isinstance(inner, mi.StrType):
            self._text(path, inner, meta, value)
        elif isinstance(inner, mi.IntType | mi.FloatType):
            self._bounds(path, inner, value)
        # Any, bool and None: the right shape is all there is to check.

    def _union(self, path: Path, t: mi.UnionType, value: Any) -> None:
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if value is None and len(members) < len(t.types):
            return
        fitting = [m for m in members if _accepts(_unwrap(m)[0], value)]
        if fitting or len(members) == 1:
            self.check(path, (fitting or members)[0])
        else:
            expected = _describe_union(members, self.literals)
            self._at(path, f"{_label(path, self.kind_label)} must be {expected}, got {_got(value)}")

    def _mismatch(self, path: Path, t: mi.Type, meta: mi.Metadata | None, value: Any) -> None:
        pulse = _pulse(meta)
        if pulse in ("duration", "time_of_day") and _is_number(value):
            self._bad_time(path, pulse, value)
            return
        label = _label(path, self.kind_label)
        message = f"{label} must be {_describe(t, meta, self.literals)}, got {_got(value)}"
        if isinstance(t, mi.StrType) and isinstance(value, bool | int | float):
            message += "; put it in quotes to keep it as text"
        self._at(path, message)

    def _struct(self, path: Path, t: mi.StructType, value: dict[Any, Any]) -> None:
        names = [f.encode_name for f in t.fields]
        where = self._where(path)
        if t.forbid_unknown_fields:
            for key in value:
                if key not in names:
                    self._unknown_key((*path, key), key, names, where)
        for f in t.fields:
            if f.encode_name in value:
                self.check((*path, f.encode_name), f.type)
            elif f.required:
                self._at(path, f"`{f.encode_name}` is missing{self._needed(path, where)}")

    def _list(self, path: Path, t: mi.ListType, value: list[Any]) -> None:
        for i in range(len(value)):
            self.check((*path, i), t.item_type)
        self._length(path, t, len(value), "items")

    def _dict(self, path: Path, t: mi.DictType, value: dict[Any, Any]) -> None:
        key_type = _unwrap(t.key_type)[0]
        for key in value:
            if self._key_ok((*path, key), key_type, key):
                self.check((*path, key), t.value_type)
        self._length(path, t, len(value), "entries")

    def _key_ok(self, path: Path, key_type: mi.Type, key: Any) -> bool:
        if isinstance(key_type, mi.LiteralType) and key not in key_type.values:
            names = [str(v) for v in _in_declared_order(key_type, self.literals)]
            self._unknown_key(path, key, names, self._where(path[:-1]))
            return False
        if isinstance(key_type, mi.StrType) and not isinstance(key, str):
            where = self._where(path[:-1])
            self._at(path, f"key `{_key_text(key)}` {where} must be text: put it in quotes", True)
            return False
        return True

    def _literal(self, path: Path, t: mi.LiteralType, value: Any) -> None:
        if value in t.values:
            return
        options = _in_declared_order(t, self.literals)
        message = (
            f"{_label(path, self.kind_label)} must be one of {', '.join(map(str, options))}; "
            f"got {_show(value)}"
        )
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(o) for o in options], n=1)
            message += f' — did you mean "{close[0]}"?' if close else ""
        self._at(path, message)

    def _text(self, path: Path, t: mi.StrType, meta: mi.Metadata | None, value: str) -> None:
        pulse = _pulse(meta)
        if t.pattern is not None and re.search(t.pattern, value) is None:
            if pulse in ("duration", "time_of_day"):
                self._bad_time(path, pulse, value)
            else:
                self._at(
                    path,
                    f"{_label(path, self.kind_label)} must be {_rule_text(t, meta)}; "
                    f"got {_show(value)}",
                )
        self._length(path, t, len(value), "characters")

    def _bad_time(self, path: Path, pulse: str, value: str | float) -> None:
        noun, help_text = (
            ("duration", DURATION_HELP)
            if pulse == "duration"
            else ("time of day", _TIME_OF_DAY_HELP)
        )
        label = _label(path, self.kind_label)
        self._at(path, f"bad {noun} {_show(value)} for {label}: use {help_text}")

    def _bounds(self, path: Path, t: mi.IntType | mi.FloatType, value: float) -> None:
        ok = (
            (t.ge is None or value >= t.ge)
            and (t.gt is None or value > t.gt)
            and (t.le is None or value <= t.le)
            and (t.lt is None or value < t.lt)
        )
        if not ok:
            label = _label(path, self.kind_label)
            self._at(path, f"{label} must be {_range_text(t)}, got {_show(value)}")

    def _length(
        self,
        path: Path,
        t: mi.StrType | mi.ListType | mi.DictType,
        length: int,
        unit: str,
    ) -> None:
        label = _label(path, self.kind_label)
        if t.min_length == 1 and length == 0:
            self._at(path, f"{label} must not be empty")
        elif t.min_length is not None and length < t.min_length:
            self._at(path, f"{label} must have at least {t.min_length} {unit}, got {length}")
        elif t.max_length is not None and length > t.max_length:
            self._at(path, f"{label} must have at most {t.max_length} {unit}, got {length}")

    def _unknown_key(self, path: Path, key: Any, names: Sequence[str], where: str) -> None:
        text = _key_text(key)
        close = difflib.get_close_matches(text, names, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"expected one of: {', '.join(names)}"
        self._at(path, f"unknown key `{text}` {where}; {hint}", True)

    def _needed(self, path: Path, where: str) -> str:
        return f": every {self.kind_label} needs one" if not path else f" {where}"

    def _where(self, path: Path) -> str:
        return f"at the top of the {self.kind_label}" if not path else f"in {_dotted(path)}"

    def _at(self, path: Path, message: str, key: bool = False) -> None:
        line, column = self.doc.key_mark(path) if key else self.doc.mark(path)
        self.problems.append(Problem(self.file, line, column, message))


def _unwrap(t: mi.Type) -> tuple[mi.Type, mi.Metadata | None]:
    return (t.type, t) if isinstance(t, mi.Metadata) else (t, None)


def _pulse(meta: mi.Metadata | None) -> str | None:
    extra = meta.extra if meta is not None and meta.extra else {}
    pulse = extra.get("pulse")
    return pulse if isinstance(pulse, str) else None


def _accepts(t: mi.Type, value: Any) -> bool:
    """Whether ``value`` has the shape ``t`` takes (its constraints are checked later)."""
    if isinstance(t, mi.AnyType):
        return True
    if isinstance(value, bool):
        return isinstance(t, mi.BoolType)
    if isinstance(value, int):
        return isinstance(t, mi.IntType | mi.FloatType | mi.LiteralType)
    if isinstance(value, float):
        return isinstance(t, mi.FloatType)
    if isinstance(value, str):
        return isinstance(t, mi.StrType | mi.LiteralType)
    if isinstance(value, list):
        return isinstance(t, mi.ListType)
    if isinstance(value, dict):
        return isinstance(t, mi.StructType | mi.DictType)
    return value is None and isinstance(t, mi.NoneType)


def _describe(
    t: mi.Type, meta: mi.Metadata | None, literals: dict[frozenset[object], tuple[object, ...]]
) -> str:
    """What a value of type ``t`` is, in plain words: "a whole number", "a list"."""
    pulse = _pulse(meta)
    if isinstance(t, mi.StrType):
        return _PULSE_NOUNS.get(pulse or "", "text")
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(map(str, _in_declared_order(t, literals)))
    for kinds, words in _NOUNS:
        if isinstance(t, kinds):
            return words
    raise TypeError(f"yamlcheck cannot check values of type {t!r}")


def _describe_union(
    members: Sequence[mi.Type], literals: dict[frozenset[object], tuple[object, ...]]
) -> str:
    """ "an event type or a list of them" for ``str | list[str]``."""
    words = [_describe(*_unwrap(m), literals) for m in members]
    for i, member in enumerate(members):
        if isinstance(member, mi.ListType):
            item = _describe(*_unwrap(member.item_type), literals)
            if item in words[:i] + words[i + 1 :]:
                words[i] = "a list of them"
    return " or ".join(words)


def _rule_text(t: mi.StrType, meta: mi.Metadata | None) -> str:
    """A pattern's rule from the model's description ("lower-case letters, ...")."""
    schema = meta.extra_json_schema if meta is not None and meta.extra_json_schema else {}
    description = schema.get("description")
    if not isinstance(description, str) or not description:
        return f"text matching {t.pattern}"
    return description[0].lower() + description[1:].rstrip(".")


def _range_text(t: mi.IntType | mi.FloatType) -> str:
    if t.ge is not None and t.le is not None:
        return f"between {t.ge} and {t.le}"
    parts = [
        f"{words} {bound}"
        for words, bound in (
            ("at least", t.ge),
            ("more than", t.gt),
            ("at most", t.le),
            ("less than", t.lt),
        )
        if bound is not None
    ]
    return " and ".join(parts)


def _in_declared_order(
    t: mi.LiteralType, literals: dict[frozenset[object], tuple[object, ...]]
) -> tuple[object, ...]:
    """The literal's values in the order the model declares them (type_info sorts them)."""
    return literals.get(frozenset(t.values), t.values)


def _declared_literals(kind: type) -> dict[frozenset[object], tuple[object, ...]]:
    """Every Literal in ``kind`` and the Structs it holds, by its set of values."""
    found: dict[frozenset[object], tuple[object, ...]] = {}
    seen: set[type] = set()

    def visit(annotation: object) -> None:
        if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
            if annotation not in seen:
                seen.add(annotation)
                for hint in typing.get_type_hints(annotation, include_extras=True).values():
                    visit(hint)
        elif get_origin(annotation) is Literal:
            found.setdefault(frozenset(get_args(annotation)), get_args(annotation))
        else:
            for arg in get_args(annotation):
                visit(arg)

    visit(kind)
    return found


def _label_of(kind: type) -> str:
    """ "rule" for Rule, "rule test" for RuleTest."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", kind.__name__).lower()


def _label(path: Path, kind_label: str) -> str:
    return f"`{_dotted(path)}`" if path else f"the {kind_label}"


def _dotted(path: Path) -> str:
    """``wait.cancel_on[1].event``: list items are counted from 1, as people count."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part + 1}]"
        else:
            text += ("." if text else "") + _key_text(part)
    return text


def _key_text(key: object) -> str:
    if isinstance(key, str):
        return key
    return _show(key)


def _show(value: object) -> str:
    """A value as a marketer would write it in YAML: "high", 150, true, nothing."""
    if isinstance(value, str):
        return '"' + (value if len(value) <= 60 else value[:57] + "...") + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def _got(value: object) -> str:
    if isinstance(value, str):
        return f"text {_show(value)}"
    if _is_number(value):
        return f"the number {value}"
    return _show(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value_at(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


# Positions ----------------------------------------------------------------------


def _one_based(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _position(
    text: str, index: int, start: int = 0, line: int = 0, column: int = 0
) -> tuple[int, int]:
    """1-based (line, column) of ``text[index]``, counting from a known 0-based position
    the way PyYAML's reader does (\\r\\n is one break; \\x85, \\u2028, \\u2029 break too)."""
    for i in range(start, index):
        ch = text[i]
        if ch in "\n\x85\u2028\u2029" or (ch == "\r" and text[i + 1 : i + 2] != "\n"):
            line, column = line + 1, 0
        else:
            column += 1
    return line + 1, column + 1


def _source_indices(text: str, node: ScalarNode) -> list[int]:
    """The index in ``text`` of each character of the scalar's value, then of its end."""
    value: str = node.value
    scan = _Scan(text, _token_start(text, node.start_mark.index), value)
    if node.style in ("|", ">"):
        scan.block(folded=node.style == ">")
    elif node.style in ("'", '"'):
        scan.quoted(double=node.style == '"')
    else:
        scan.plain()
    return [*scan.indices[: len(value)], scan.i]


def _token_start(text: str, index: int) -> int:
    """Skip a node's anchor (``&a``), tag (``!!str``), comments and spaces to its scalar."""
    while index < len(text):
        ch = text[index]
        if ch in " \t" + _BREAKS:
            index += 1
        elif ch in "&!#":
            stop = " \t" + _BREAKS if ch != "#" else _BREAKS
            while index < len(text) and text[index] not in stop:
                index += 1
        else:
            break
    return index


class _Scan:
    """Follows PyYAML's scanner (yaml/scanner.py) over one scalar, noting for each character
    of the value where in the text it came from: folded line breaks, escapes, doubled quotes
    and block indentation all line up. It stops once every character is placed."""

    def __init__(self, text: str, start: int, value: str) -> None:
        self.text = text
        self.i = start
        self.value = value
        self.indices: list[int] = []

    def plain(self) -> None:
        while not self._full():
            if self._at_fold(" "):
                self._fold(" ")
            else:
                self._emit(self.i)
                self.i += 1

    def quoted(self, *, double: bool) -> None:
        self.i += 1  # the opening quote
        while not self._full():
            ch = self._peek()
            if self._at_fold(" \t"):
                self._fold(" \t")
            elif double and ch == "\\":
                self._escape()
            else:
                self._emit(self.i)
                self.i += 2 if ch == "'" and not double else 1  # '' is one quote

    def block(self, *, folded: bool) -> None:
        self._next_line()  # the header: | or >, indicators, a comment
        leading = len(self.value) - len(self.value.lstrip("\n\u2028\u2029"))
        for _ in range(leading):
            self._emit(self._line_end())
            self._next_line()
        if self._full():
            return
        line_spaces = len(self.text[self.i :]) - len(self.text[self.i :].lstrip(" "))
        value_spaces = len(self.value[leading:]) - len(self.value[leading:].lstrip(" "))
        self._block_lines(line_spaces - value_spaces, folded)

    def _block_lines(self, indent: int, folded: bool) -> None:
        while not self._full():
            self.i += indent
            starts_with_space = self._peek() in " \t"
            while self._peek() not in _BREAKS and not self._full():
                self._emit(self.i)
                self.i += 1
            if self._full():
                return
            break_at = self.i
            line_break = self._line_break()
            breaks = self._block_breaks(indent)
            folds = (
                folded
                and line_break == "\n"
                and not starts_with_space
                and self._is_content(indent)
                and self._peek(indent) not in " \t"
            )
            if not (folds and breaks):  # folded lines with empty lines between keep just those
                self._emit(break_at)  # the line break, or the space it folds into
            for index in breaks:
                self._emit(index)

    def _block_breaks(self, indent: int) -> list[int]:
        """Empty lines (up to ``indent`` spaces, then a break): the index of each break."""
        breaks: list[int] = []
        while True:
            spaces = 0
            while spaces < indent and self._peek(spaces) == " ":
                spaces += 1
            if self._peek(spaces) not in _BREAKS:
                return breaks
            self.i += spaces
            breaks.append(self.i)
            self._line_break()

    def _is_content(self, indent: int) -> bool:
        spaces = self.text[self.i : self.i + indent]
        return spaces == " " * indent and self._peek(indent) not in _BREAKS + "\0"

    def _at_fold(self, blank: str) -> bool:
        """At blanks then a line break, which fold into a space or into the empty lines after."""
        ahead = 0
        while self._peek(ahead) in blank:
            ahead += 1
        return self._peek(ahead) in _BREAKS

    def _fold(self, blank: str) -> None:
        while self._peek() in blank:
            self.i += 1
        break_at = self.i
        line_break = self._line_break()
        breaks = self._flow_breaks(blank)
        if line_break != "\n" or not breaks:
            self._emit(break_at)  # a \u2028 kept, or the space a single break folds into
        for index in breaks:
            self._emit(index)

    def _flow_breaks(self, blank: str) -> list[int]:
        breaks: list[int] = []
        while True:
            while self._peek() in blank:
                self.i += 1
            if self._peek() not in _BREAKS:
                return breaks
            breaks.append(self.i)
            self._line_break()

    def _escape(self) -> None:
        code = self._peek(1)
        if code in _BREAKS:  # an escaped line break joins the lines
            self.i += 1
            self._line_break()
            for index in self._flow_breaks(" \t"):
                self._emit(index)
        else:
            self._emit(self.i)
            self.i += 2 + _HEX_ESCAPE_LENGTHS.get(code, 0)

    def _line_break(self) -> str:
        ch = self._peek()
        self.i += 2 if self.text[self.i : self.i + 2] == "\r\n" else 1
        return ch if ch in "\u2028\u2029" else "\n"

    def _line_end(self) -> int:
        while self.i < len(self.text) and self.text[self.i] not in _BREAKS:
            self.i += 1
        return self.i

    def _next_line(self) -> None:
        self._line_end()
        if self.i < len(self.text):
            self._line_break()

    def _peek(self, ahead: int = 0) -> str:
        index = self.i + ahead
        return self.text[index] if index < len(self.text) else "\0"

    def _emit(self, index: int) -> None:
        self.indices.append(index)

    def _full(self) -> bool:
        return len(self.indices) >= len(self.value)
