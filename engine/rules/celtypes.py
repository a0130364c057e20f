"""The types rule expressions are checked against.

CEL itself is dynamically typed at evaluation time; the checker
(``engine.rules.celcheck``) uses these types to tell a marketer, before a rule
goes live, that ``profile.ordres`` does not exist or that a tier cannot be
compared with a number. ``StructType`` is a closed set of named fields (at
evaluation time it is a map), ``MapType`` an open map such as traits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CelType:
    """A primitive: int, uint, double, string, bool, bytes, null, timestamp, duration, dyn."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ListType(CelType):
    elem: CelType = field(default_factory=lambda: DYN)

    def __str__(self) -> str:
        return f"list of {self.elem}"


@dataclass(frozen=True)
class MapType(CelType):
    key: CelType = field(default_factory=lambda: STRING)
    value: CelType = field(default_factory=lambda: DYN)

    def __str__(self) -> str:
        return f"map of {self.key} to {self.value}"


@dataclass(frozen=True, eq=False)
class StructType(CelType):
    """Named fields, each with a type and a one-line description for messages and docs.

    Compared by identity: two struct types are the same only if they are the
    same object (the schema builds each once).
    """

    fields: Mapping[str, CelType] = field(default_factory=dict)
    docs: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name

    def __hash__(self) -> int:
        return id(self)


INT: CelType = CelType("int")
UINT: CelType = CelType("uint")
DOUBLE: CelType = CelType("double")
STRING: CelType = CelType("string")
BOOL: CelType = CelType("bool")
BYTES: CelType = CelType("bytes")
NULL: CelType = CelType("null")
TIMESTAMP: CelType = CelType("timestamp")
DURATION: CelType = CelType("duration")
DYN: CelType = CelType("dyn")
TYPE: CelType = CelType("type")

NUMBERS = (INT, UINT, DOUBLE)


def list_of(elem: CelType) -> ListType:
    return ListType("list", elem)


def map_of(value: CelType, key: CelType = STRING) -> MapType:
    return MapType("map", key, value)


def struct(name: str, fields: Mapping[str, tuple[CelType, str]]) -> StructType:
    """A struct type from ``{field: (type, description)}``."""
    return StructType(
        name,
        {k: t for k, (t, _) in fields.items()},
        {k: d for k, (_, d) in fields.items()},
    )


def is_dyn(t: CelType) -> bool:
    return t is DYN or t == DYN


def assignable(value: CelType, to: CelType) -> bool:
    """Can a value of type ``value`` stand where ``to`` is expected (dyn matches anything)?"""
    if is_dyn(value) or is_dyn(to):
        return True
    if isinstance(to, ListType):
        return isinstance(value, ListType) and assignable(value.elem, to.elem)
    if isinstance(to, MapType):
        return isinstance(value, MapType | StructType) and (
            isinstance(value, StructType)
            or (assignable(value.key, to.key) and assignable(value.value, to.value))
        )
    if isinstance(to, StructType):
        return value is to
    return value == to


@dataclass(frozen=True)
class Environment:
    """What an expression may read: top-level variables and their types, and the
    extra functions Pulse registers beyond CEL's standard ones (name -> (argument
    types, result type))."""

    variables: Mapping[str, CelType]
    functions: Mapping[str, tuple[tuple[CelType, ...], CelType]] = field(default_factory=dict)
