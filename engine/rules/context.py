"""What rule expressions can read, and how a context is built cheaply per evaluation.

The CEL interpreter converts every value it is given into its own types, and
a nested map costs microseconds per level and per key: handing it the whole
profile as a dict costs about 25 µs per evaluation, which would dominate the
hot path. So the context is *flat*: each field an expression reads
(``profile.orders``, ``event.sku``) is compiled into its own variable
(``profile__orders``), computed lazily on first use within one evaluation
scope and shared by every expression evaluated on the same event. A typical
event then costs a handful of scalar conversions. Rule parameters and the
rule id are constants and are inlined as CEL literals at compile time.

The schema below is also what the checker validates expressions against and
what ``docs/rules.md`` lists, so the three cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import math
import typing
from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from engine import events as ev
from engine.loyalty import LoyaltyProgram
from engine.profile import CustomerState, points_held
from engine.rules.celtypes import (
    BOOL,
    DOUBLE,
    DYN,
    INT,
    STRING,
    CelType,
    Environment,
    StructType,
    list_of,
    map_of,
    struct,
)
from engine.rules.memory import Journey

DAY = 86400.0
SEPARATOR = "__"  # between the parts of a flat variable name: profile__orders

Getter = Callable[["Scope"], Any]


class Scope:
    """One evaluation point: a customer's state, the event in question, the time.

    Values are computed on first use and cached, so the expressions evaluated
    on one event share the work.
    """

    __slots__ = (
        "_zone",
        "default_zone",
        "event",
        "journey",
        "loyalty",
        "now",
        "rule_id",
        "state",
        "values",
    )
    state: CustomerState
    event: ev.BaseEvent | None
    now: float
    loyalty: LoyaltyProgram
    default_zone: str
    _zone: dt.tzinfo | None
    journey: Journey
    rule_id: str
    values: dict[str, Any]

    def __init__(
        self,
        state: CustomerState,
        event: ev.BaseEvent | None,
        now: float,
        loyalty: LoyaltyProgram,
        default_zone: str,
    ) -> None:
        self.state = state
        self.event = event
        self.now = now
        self.loyalty = loyalty
        self.default_zone = default_zone
        self._zone = None
        self.journey = _NO_JOURNEY
        self.rule_id = ""
        self.values = {}

    @property
    def zone(self) -> dt.tzinfo:
        """The customer's time zone (else the policy's), looked up on first use."""
        if self._zone is None:
            own = self.state.traits.get("timezone")
            found = zone_of(own) if own else None
            self._zone = found or zone_of(self.default_zone) or dt.UTC
        return self._zone

    def for_rule(self, rule_id: str, journey: Journey | None) -> Scope:
        """Point the rule-specific fields (``rule.*``) at one rule; other values stay cached."""
        if rule_id != self.rule_id:
            self.rule_id = rule_id
            self.journey = journey or _NO_JOURNEY
            values = self.values
            if values:
                for name in _RULE_FIELDS:
                    values.pop(name, None)
        return self

    def inputs(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        """The values of the flat variables an expression reads, computed once per scope."""
        values = self.values
        out = []
        for name in names:
            if name in values:
                out.append(values[name])
            else:
                value = values[name] = GETTERS[name](self)
                out.append(value)
        return tuple(out)

    def value(self, name: str) -> Any:
        """One flat variable's value, computed once per scope."""
        values = self.values
        if name in values:
            return values[name]
        value = values[name] = GETTERS[name](self)
        return value


_NO_JOURNEY = Journey()


@lru_cache(maxsize=512)
def zone_of(name: str) -> dt.tzinfo | None:
    """The named time zone; None for a name no time-zone database knows."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


# The schema -----------------------------------------------------------------------

_LINE = struct(
    "line item",
    {
        "sku": (STRING, "the product id"),
        "name": (STRING, "the product name (may be null)"),
        "category": (STRING, "the product category (may be null)"),
        "price": (DOUBLE, "unit price"),
        "quantity": (INT, "units"),
    },
)

PROFILE_FIELDS: dict[str, tuple[CelType, str, Getter]] = {}
CART_FIELDS: dict[str, tuple[CelType, str, Getter]] = {}
ITEM_FIELDS: dict[str, tuple[CelType, str, Getter]] = {}
LOCAL_FIELDS: dict[str, tuple[CelType, str, Getter]] = {}
RULE_FIELDS: dict[str, tuple[CelType, str, Getter]] = {}


def _days_since(ts: float, now: float) -> float:
    return round((now - ts) / DAY, 4) if ts > 0 else -1.0


STATE_FIELDS: set[str] = set()  # profile fields that are CustomerState attributes as they are


def _state_field(name: str) -> Getter:
    STATE_FIELDS.add(name)
    return lambda s: getattr(s.state, name)


def _profile(name: str, cel_type: CelType, doc: str, getter: Getter) -> None:
    PROFILE_FIELDS[name] = (cel_type, doc, getter)


def _tier_spend(s: Scope) -> float:
    since = s.now - s.loyalty.window_s
    return round(sum(o.total - o.refunded for o in s.state.order_history if o.ts >= since), 2)


def _next_tier(s: Scope) -> tuple[str, float]:
    """The next tier above the current one and its spend threshold ("", 0 at the top)."""
    names = [t.name for t in s.loyalty.tiers]
    current = names.index(s.state.tier) if s.state.tier in names else 0
    if current + 1 >= len(names):
        return "", 0.0
    tier = s.loyalty.tiers[current + 1]
    return tier.name, float(tier.min_spend)


def points_expiry(state: CustomerState, loyalty: LoyaltyProgram, now: float) -> tuple[float, int]:
    """When the next points expire after ``now``, and how many: those of every
    order expiring within a day of the first, net of refunds, at most the
    balance (spent points are not traced to orders, so the balance caps it).

    Points expire ``points_expire_days`` after the order that earned them
    (rules/loyalty.yaml); (0, 0) when points never expire or none are held.
    """
    expire_s = loyalty.points_expire_s
    if expire_s is None or state.loyalty_points <= 0:
        return 0.0, 0
    first = 0.0
    points = 0
    for order in state.order_history:  # oldest first
        held = points_held(order)
        if held <= 0 or order.ts + expire_s <= now:
            continue
        if not first:
            first = order.ts + expire_s
        elif order.ts + expire_s > first + DAY:
            break
        points += held
    return (first, min(points, state.loyalty_points)) if points else (0.0, 0)


for _name, _type, _doc in (
    ("customer_id", STRING, "the customer's id (anon:<id> before identification)"),
    ("first_seen", DOUBLE, "time of the first event (epoch seconds)"),
    ("last_seen", DOUBLE, "time of the latest event (epoch seconds)"),
    ("events_total", INT, "events seen"),
    ("event_counts", map_of(INT), "events seen by type: profile.event_counts.product_view"),
    ("sessions", INT, "sessions (30 minutes without events starts a new one)"),
    ("orders", INT, "orders placed"),
    ("revenue", DOUBLE, "order totals minus refunds"),
    ("refunds", INT, "refunds"),
    ("last_order_at", DOUBLE, "time of the latest order (0 before any)"),
    ("loyalty_points", INT, "loyalty points held"),
    ("tier", STRING, "loyalty tier (rules/loyalty.yaml)"),
    ("previous_tier", STRING, "the tier before the latest change"),
    ("tier_changed_at", DOUBLE, "when the tier last changed"),
    ("preferred_channel", STRING, "the channel the customer engages with most"),
    ("preferred_hour", INT, "the local hour with most activity (-1 before any)"),
):
    _profile(_name, _type, _doc, _state_field(_name))

_profile(
    "days_since_first_seen",
    DOUBLE,
    "days since the first event",
    lambda s: _days_since(s.state.first_seen, s.now),
)
_profile(
    "days_since_last_seen",
    DOUBLE,
    "days since the latest event",
    lambda s: _days_since(s.state.last_seen, s.now),
)
_profile(
    "days_since_last_order",
    DOUBLE,
    "days since the latest order (-1 before any order)",
    lambda s: _days_since(s.state.last_order_at, s.now),
)
_profile(
    "average_order_value",
    DOUBLE,
    "revenue per order",
    lambda s: round(s.state.revenue / s.state.orders, 2) if s.state.orders else 0.0,
)
_profile(
    "spend_12m",
    DOUBLE,
    "spend over the last 365 days",
    lambda s: round(
        sum(o.total - o.refunded for o in s.state.order_history if o.ts >= s.now - 365 * DAY), 2
    ),
)
_profile(
    "orders_12m",
    INT,
    "orders over the last 365 days",
    lambda s: sum(1 for o in s.state.order_history if o.ts >= s.now - 365 * DAY),
)
_profile("tier_spend", DOUBLE, "spend over the loyalty window that sets the tier", _tier_spend)
_profile("next_tier", STRING, 'the next tier up ("" at the top)', lambda s: _next_tier(s)[0])
_profile(
    "next_tier_spend",
    DOUBLE,
    "the spend the next tier needs (0 at the top)",
    lambda s: _next_tier(s)[1],
)
_profile(
    "to_next_tier",
    DOUBLE,
    "spend still missing for the next tier (0 at the top)",
    lambda s: max(0.0, round(_next_tier(s)[1] - _tier_spend(s), 2)) if _next_tier(s)[0] else 0.0,
)
_profile(
    "points_expire_at",
    DOUBLE,
    "when the next points expire (0 if none or never)",
    lambda s: points_expiry(s.state, s.loyalty, s.now)[0],
)
_profile(
    "points_expiring",
    INT,
    "how many points expire at points_expire_at",
    lambda s: points_expiry(s.state, s.loyalty, s.now)[1],
)
_profile(
    "consent",
    map_of(BOOL),
    "consent per channel: profile.consent.email (absent when never asked)",
    lambda s: {ch: c.granted for ch, c in s.state.consent.items()},
)
_profile(
    "open_tickets",
    INT,
    "support tickets open now",
    lambda s: len(s.state.open_tickets),
)
_profile(
    "traits", map_of(STRING), "identify traits: profile.traits.email", lambda s: s.state.traits
)
_profile("segments", list_of(STRING), "built-in segments", lambda s: s.state.segments)
_profile(
    "account_id",
    STRING,
    'the account of Segment group calls ("" before any)',
    lambda s: s.state.account.id if s.state.account is not None else "",
)
_profile(
    "account_traits",
    map_of(DYN),
    "the account's traits: profile.account_traits.plan",
    lambda s: s.state.account.traits if s.state.account is not None else {},
)
_profile(
    "category_affinity",
    map_of(DOUBLE),
    "decayed interest per category",
    lambda s: {c: round(d.at_time(s.now), 4) for c, d in s.state.affinity.items()},
)
_profile(
    "recently_viewed",
    list_of(STRING),
    "viewed SKUs, most recent first",
    lambda s: [v.sku for v in s.state.recently_viewed],
)
_profile(
    "recently_viewed_count",
    INT,
    "how many SKUs recently_viewed holds: size() without handing CEL the list",
    lambda s: len(s.state.recently_viewed),
)
_profile("timezone", STRING, "the customer's time zone (else the policy's)", lambda s: str(s.zone))
_profile(
    "anonymous",
    BOOL,
    "not identified yet",
    lambda s: s.state.customer_id.startswith("anon:"),
)


def _cart_lines(s: Scope) -> list[dict[str, Any]]:
    return [
        {
            "sku": c.sku,
            "name": c.name,
            "category": c.category,
            "price": c.price,
            "quantity": c.quantity,
        }
        for c in s.state.cart.values()
    ]


CART_FIELDS.update(
    {
        "value": (DOUBLE, "price times quantity over the cart", lambda s: s.state.cart_value),
        "quantity": (INT, "units in the cart", lambda s: s.state.cart_quantity),
        "items": (list_of(_LINE), "the cart's lines", _cart_lines),
        "skus": (list_of(STRING), "SKUs in the cart", lambda s: list(s.state.cart)),
        "categories": (
            list_of(STRING),
            "categories in the cart",
            lambda s: sorted({c.category for c in s.state.cart.values() if c.category}),
        ),
        "updated_at": (DOUBLE, "when the cart last changed", lambda s: s.state.cart_updated_at),
    }
)


def _event_sku(s: Scope) -> str:
    sku = getattr(s.event, "sku", None)
    return sku if isinstance(sku, str) else ""


# These run on most product views: plain loops, no generator per call.


def _item_views(s: Scope) -> int:
    sku = getattr(s.event, "sku", None)
    for v in s.state.recently_viewed:
        if v.sku == sku:
            return v.views
    return 0


def _item_viewed_at(s: Scope) -> float:
    sku = getattr(s.event, "sku", None)
    for v in s.state.recently_viewed:
        if v.sku == sku:
            return v.ts
    return 0.0


ITEM_FIELDS.update(
    {
        "sku": (STRING, 'the event\'s product ("" for events without one)', _event_sku),
        "views": (INT, "times the customer viewed it (recent views)", _item_views),
        "in_cart": (
            BOOL,
            "it is in the cart",
            lambda s: getattr(s.event, "sku", None) in s.state.cart,
        ),
        "last_viewed_at": (DOUBLE, "when the customer last viewed it", _item_viewed_at),
    }
)


def _local(s: Scope) -> dt.datetime:
    return dt.datetime.fromtimestamp(s.now, tz=s.zone)


LOCAL_FIELDS.update(
    {
        "hour": (INT, "hour of day, 0-23, in the customer's time zone", lambda s: _local(s).hour),
        "minute": (INT, "minute of the hour", lambda s: _local(s).minute),
        "weekday": (INT, "day of the week, 1 (Monday) to 7", lambda s: _local(s).isoweekday()),
        "day": (INT, "day of the month", lambda s: _local(s).day),
        "month": (INT, "month, 1-12", lambda s: _local(s).month),
        "date": (STRING, "the local date, YYYY-MM-DD", lambda s: _local(s).date().isoformat()),
    }
)

RULE_FIELDS.update(
    {
        "entries": (INT, "times this customer entered the rule", lambda s: s.journey.entries),
        "fired": (INT, "messages this rule sent this customer", lambda s: s.journey.fired),
        "last_fired_at": (DOUBLE, "when it last sent (0 never)", lambda s: s.journey.last_fired_at),
        "last_entry_at": (
            DOUBLE,
            "when the customer last entered",
            lambda s: s.journey.last_entry_at,
        ),
    }
)


def _recommendations(s: Scope) -> list[str]:
    """The customer's own candidates: recently viewed, not in the cart, newest first."""
    cart = s.state.cart
    return [v.sku for v in s.state.recently_viewed if v.sku not in cart][:10]


# Events: one struct type per event type, generated from the msgspec model.


def _cel_type_of(annotation: Any) -> tuple[CelType, Callable[[Any], Any]]:
    """The CEL type of an event field's annotation and how to convert its value."""
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is Annotated:
        return _cel_type_of(args[0])
    if origin in (Union, UnionType):
        return _cel_type_of(args[0]) if len(args) == 1 else (DYN, _plain)
    if origin is Literal:
        return STRING, _plain
    if annotation is str:
        return STRING, _plain
    if annotation is bool:
        return BOOL, _plain
    if annotation is int:
        return INT, _plain
    if annotation is float:
        return DOUBLE, _as_float
    if annotation is dt.datetime:
        return DOUBLE, _epoch
    if origin in (tuple, list):
        elem, convert = _cel_type_of(args[0])
        return list_of(elem), lambda v: [convert(x) for x in v] if v is not None else []
    if origin is dict:
        return map_of(DYN), lambda v: dict(v) if v is not None else {}
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _struct_type(annotation), _struct_value
    return DYN, _plain


def _plain(value: Any) -> Any:
    return value


def _as_float(value: Any) -> Any:
    return float(value) if value is not None else None


def _epoch(value: Any) -> Any:
    return value.timestamp() if value is not None else 0.0


def _struct_value(value: Any) -> Any:
    if value is None:
        return None
    return {f: _to_cel(getattr(value, f)) for f in value.__struct_fields__}


def _to_cel(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return _struct_value(value)
    if isinstance(value, tuple | list):
        return [_to_cel(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return value


@cache
def _struct_type(kind: type[msgspec.Struct]) -> StructType:
    hints = _hints(kind)
    return struct(
        kind.__name__.lower(),
        {name: (_cel_type_of(hints[name])[0], "") for name in kind.__struct_fields__},
    )


def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind, include_extras=True)


_EVENT_KINDS = dict(zip(ev.EVENT_TYPE_NAMES, ev.EVENT_TYPES, strict=True))

_ORDER_EXTRAS: dict[str, tuple[CelType, str, Callable[[Any], Any]]] = {
    "skus": (list_of(STRING), "SKUs ordered", lambda e: [i.sku for i in e.items]),
    "categories": (
        list_of(STRING),
        "categories ordered",
        lambda e: sorted({i.category for i in e.items if i.category}),
    ),
    "units": (INT, "units ordered", lambda e: sum(i.quantity for i in e.items)),
}


@cache
def event_fields(type_name: str) -> dict[str, tuple[CelType, Callable[[Any], Any]]]:
    """Fields of one event type as CEL sees them: its own, ``type`` and derived ones."""
    kind = _EVENT_KINDS[type_name]
    hints = _hints(kind)
    out: dict[str, tuple[CelType, Callable[[Any], Any]]] = {"type": (STRING, _plain)}
    for name in kind.__struct_fields__:
        out[name] = _cel_type_of(hints[name])
    if kind is ev.OrderPlaced:
        for name, (t, _doc, derive) in _ORDER_EXTRAS.items():
            out[name] = (t, derive)
    return out


def event_type(type_names: tuple[str, ...]) -> StructType:
    """The struct ``event`` has for a rule reacting to these types: their common fields."""
    per_type = [event_fields(t) for t in type_names]
    common = {
        name: t
        for name, (t, _c) in per_type[0].items()
        if all(name in other and _same(other[name][0], t) for other in per_type[1:])
    }
    return StructType(f"event ({', '.join(type_names)})", common, {})


def _same(a: CelType, b: CelType) -> bool:
    if isinstance(a, StructType) or isinstance(b, StructType):
        return a.name == b.name
    return a == b


def _event_getter(path: tuple[str, ...]) -> Getter:
    """Read ``event.<path>`` whatever the event's type (null when it lacks the field)."""
    head, rest = path[0], path[1:]

    def get(s: Scope) -> Any:
        event = s.event
        if event is None:
            return None
        if head == "type":
            return ev.event_type(event)
        fields = event_fields(ev.event_type(event))
        if head not in fields:
            return None
        _t, convert = fields[head]
        derive = _ORDER_EXTRAS.get(head) if isinstance(event, ev.OrderPlaced) else None
        value = derive[2](event) if derive else convert(getattr(event, head))
        for part in rest:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return get


# Environments and flat names ----------------------------------------------------------

_STRUCTS: dict[str, dict[str, tuple[CelType, str, Getter]]] = {
    "profile": PROFILE_FIELDS,
    "cart": CART_FIELDS,
    "item": ITEM_FIELDS,
    "local": LOCAL_FIELDS,
}
PROFILE = struct("profile", {k: (t, d) for k, (t, d, _g) in PROFILE_FIELDS.items()})
CART = struct("cart", {k: (t, d) for k, (t, d, _g) in CART_FIELDS.items()})
ITEM = struct("item", {k: (t, d) for k, (t, d, _g) in ITEM_FIELDS.items()})
LOCAL = struct("local", {k: (t, d) for k, (t, d, _g) in LOCAL_FIELDS.items()})

FUNCTIONS: dict[str, tuple[tuple[CelType, ...], CelType]] = {
    "min": ((list_of(DYN),), DYN),
    "max": ((list_of(DYN),), DYN),
}


def flat_name(root: str, path: tuple[str, ...]) -> str:
    return SEPARATOR.join((root, *path))


GETTERS: dict[str, Getter] = {"now": lambda s: s.now, "recommendations": _recommendations}
for _root, _fields in _STRUCTS.items():
    for _field, (_t, _d, _g) in _fields.items():
        GETTERS[flat_name(_root, (_field,))] = _g
for _field, (_t, _d, _g) in RULE_FIELDS.items():
    GETTERS[flat_name("rule", (_field,))] = _g
_RULE_FIELDS = tuple(flat_name("rule", (f,)) for f in RULE_FIELDS)


def getter_for(root: str, path: tuple[str, ...]) -> Getter:
    """The getter of a flat variable, registering event paths on first use."""
    name = flat_name(root, path)
    found = GETTERS.get(name)
    if found is None:
        if root != "event":
            raise KeyError(name)
        found = GETTERS[name] = _event_getter(path)
    return found


HAS = "has"  # prefix of the flat name of a has() test: has__profile__traits__email

# Maps of counts and scores: a key never seen reads as zero, not as null, so
# profile.event_counts.product_view >= 3 just works for a customer with none.
_COUNT_MAPS: dict[tuple[str, tuple[str, ...]], float] = {
    ("profile", ("event_counts",)): 0,
    ("profile", ("category_affinity",)): 0.0,
}

# The keys a profile map can hold, for the checker's "did you mean".
MAP_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("traits",): tuple(ev.Traits.__struct_fields__),
    ("consent",): ("email", "sms", "push", "webhook", "in_app", "log"),
    ("event_counts",): ev.EVENT_TYPE_NAMES,
}


def map_key_getter(root: str, path: tuple[str, ...], key: str, test: bool) -> str:
    """Register the flat variable for ``root.path.key`` on a map (or for
    ``has(root.path.key)`` when ``test``) and return its name.

    Handing CEL a whole map costs microseconds per key on every evaluation;
    one value (or one boolean) costs a fraction of one.
    """
    parent = getter_for(root, path)
    name = flat_name(root, (*path, key))
    if test:
        name = f"{HAS}{SEPARATOR}{name}"
    if name in GETTERS:
        return name
    if (root, path) in _COUNT_MAPS and not test:
        zero = _COUNT_MAPS[(root, path)]

        def count(s: Scope) -> Any:
            found = parent(s)
            return found.get(key, zero) if isinstance(found, dict) else zero

        GETTERS[name] = count
        return name
    if (root, path) == ("profile", ("consent",)):  # read directly, not as a whole map

        def consent(s: Scope) -> Any:
            found = s.state.consent.get(key)
            return None if found is None else found.granted

        def has_consent(s: Scope) -> bool:
            return key in s.state.consent

        GETTERS[name] = has_consent if test else consent
        return name
    if (root, path) == ("profile", ("traits",)):  # the common case, read directly

        def trait(s: Scope) -> Any:
            return s.state.traits.get(key)

        def has_trait(s: Scope) -> bool:
            return key in s.state.traits

        GETTERS[name] = has_trait if test else trait
        return name

    def value(s: Scope) -> Any:
        found = parent(s)
        return found.get(key) if isinstance(found, dict) else None

    def present(s: Scope) -> bool:
        found = parent(s)
        return isinstance(found, dict) and key in found

    GETTERS[name] = present if test else value
    return name


def params_type(params: Mapping[str, Any]) -> StructType:
    return struct("rule.params", {k: (value_type(v), "") for k, v in params.items()})


def value_type(value: Any) -> CelType:
    """The CEL type of a constant from YAML."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        types = {value_type(v) for v in value}
        return list_of(types.pop() if len(types) == 1 else DYN)
    if isinstance(value, dict):
        types = {value_type(v) for v in value.values()}
        return map_of(types.pop() if len(types) == 1 else DYN)
    return DYN


def environment(
    event_types: tuple[str, ...] | None, params: Mapping[str, Any], with_item: bool = True
) -> Environment:
    """What one expression of a rule may read.

    ``event_types`` None means no event is in scope (date triggers); the rule's
    own ``params`` are typed from their YAML values.
    """
    rule = struct(
        "rule",
        {
            "id": (STRING, "the rule's id"),
            "params": (params_type(params), "the rule's params"),
            **{k: (t, d) for k, (t, d, _g) in RULE_FIELDS.items()},
        },
    )
    variables: dict[str, CelType] = {
        "profile": PROFILE,
        "cart": CART,
        "local": LOCAL,
        "rule": rule,
        "now": DOUBLE,
        "recommendations": list_of(STRING),
    }
    if event_types is not None:
        # No valid type (a typo reported elsewhere): any field goes, for now.
        variables["event"] = event_type(event_types) if event_types else DYN
        if with_item:
            variables["item"] = ITEM
    return Environment(variables, FUNCTIONS)


def cel_literal(value: Any) -> str:
    """A YAML constant as CEL source, for inlining ``rule.params``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written in CEL")
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(cel_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{cel_literal(str(k))}: {cel_literal(v)}" for k, v in value.items())
            + "}"
        )
    raise ValueError(f"unsupported constant {value!r}")
