"""Decoding is the only gate between untrusted bytes and the engine.

It must never raise (a poison record would stall a partition) and must keep
the original bytes of anything it rejects, so the dead-letter topic can be
replayed after a fix. Valid events must survive an encode/decode round trip
unchanged, or replays would not be faithful.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import events as ev
from engine.decode import DeadLetter, decode_event, encode_event

RECEIVED_AT = 1_700_000_000.5

# JSON values orjson can serialize (no NaN/inf: they are not JSON) ------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)

# Mostly event-shaped objects, so decoding gets past the tag into field validation.
_field_names = st.sampled_from(
    [
        "type",
        "event_id",
        "customer_id",
        "anonymous_id",
        "timestamp",
        "channel",
        "context",
        "sku",
        "price",
        "quantity",
        "order_id",
        "total",
        "items",
        "traits",
        "points",
        "name",
        "properties",
        "message_id",
        "message_channel",
        "consent_channel",
        "granted",
        "query",
    ]
)
event_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(ev.EVENT_TYPE_NAMES) | json_scalars},
    optional={"event_id": json_scalars, "customer_id": json_scalars},
).flatmap(
    lambda base: st.dictionaries(_field_names, json_values, max_size=8).map(
        lambda extra: {**extra, **base}
    )
)


def _assert_total(raw: bytes) -> None:
    result = decode_event(raw, RECEIVED_AT)
    assert isinstance(result, ev.BaseEvent | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.raw == raw
        assert result.reason
    else:
        assert result.timestamp is not None and result.timestamp.tzinfo is not None


@given(st.binary())
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _assert_total(raw)


@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    _assert_total(orjson.dumps(value))


@given(event_shaped)
def test_event_shaped_json_never_raises(value: dict[str, Any]) -> None:
    _assert_total(orjson.dumps(value))


def test_none_value_is_a_dead_letter() -> None:
    """A Kafka tombstone has no value; it must not crash the consumer."""
    result = decode_event(None, RECEIVED_AT)
    assert isinstance(result, DeadLetter)
    assert result.raw == b""


# Valid events of every type, derived from the Structs themselves -------------
#
# Walking msgspec's type info means a new event type or field is covered
# without touching this file.

# RFC 3339 offsets have minute resolution; whole-minute offsets round-trip exactly.
aware_timezones = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31), timezones=aware_timezones
)
# Values an ``Any`` field may hold after a JSON round trip (lists, not tuples).
any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


def _bound(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def strategy_for(t: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """A strategy producing Python values that satisfy the msgspec type ``t``."""
    it = msgspec.inspect
    if isinstance(t, it.StrType):
        if t.pattern is not None:
            return st.from_regex(t.pattern, fullmatch=True)
        return st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 30, 30))
    if isinstance(t, it.BoolType):
        return st.booleans()
    if isinstance(t, it.IntType):
        return st.integers(
            min_value=int(_bound(t.ge, -(2**63))), max_value=int(_bound(t.le, 2**63 - 1))
        )
    if isinstance(t, it.FloatType):
        return st.floats(
            min_value=_bound(t.ge, -1e300), max_value=_bound(t.le, 1e300), allow_nan=False
        )
    if isinstance(t, it.NoneType):
        return st.none()
    if isinstance(t, it.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, it.DateTimeType):
        return aware_datetimes
    if isinstance(t, it.AnyType):
        return any_values
    if isinstance(t, it.UnionType):
        return st.one_of(*(strategy_for(member) for member in t.types))
    if isinstance(t, it.VarTupleType):
        return st.lists(strategy_for(t.item_type), max_size=3).map(tuple)
    if isinstance(t, it.ListType):
        return st.lists(strategy_for(t.item_type), max_size=3)
    if isinstance(t, it.DictType):
        return st.dictionaries(strategy_for(t.key_type), strategy_for(t.value_type), max_size=3)
    if isinstance(t, it.StructType):
        return struct_strategy(t)
    raise NotImplementedError(f"no strategy for {t!r}; extend strategy_for")


def struct_strategy(info: msgspec.inspect.StructType) -> st.SearchStrategy[Any]:
    required = {f.name: strategy_for(f.type) for f in info.fields if f.required}
    optional = {f.name: strategy_for(f.type) for f in info.fields if not f.required}
    kwargs = st.fixed_dictionaries(required, optional=optional)
    if issubclass(info.cls, ev.BaseEvent):
        kwargs = kwargs.map(_with_identity if info.cls is not ev.Alias else _with_both_ids)
    return kwargs.map(lambda kw: info.cls(**kw))


def _with_identity(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Events need one of customer_id / anonymous_id; the generator may pick neither."""
    if kwargs.get("customer_id") is None and kwargs.get("anonymous_id") is None:
        kwargs["customer_id"] = "c-1"
    return kwargs


def _with_both_ids(kwargs: dict[str, Any]) -> dict[str, Any]:
    """An alias needs both (the new id and the previous one)."""
    kwargs["customer_id"] = kwargs.get("customer_id") or "c-1"
    kwargs["anonymous_id"] = kwargs.get("anonymous_id") or "c-0"
    return kwargs


def _with_timestamp(event: ev.BaseEvent, when: datetime) -> ev.BaseEvent:
    return msgspec.structs.replace(event, timestamp=event.timestamp or when)


def events_of(event_type: type[ev.BaseEvent]) -> st.SearchStrategy[ev.BaseEvent]:
    info = msgspec.inspect.type_info(event_type)
    assert isinstance(info, msgspec.inspect.StructType)
    return struct_strategy(info)


valid_events = st.one_of(*(events_of(t) for t in ev.EVENT_TYPES))
timestamped_events = st.builds(_with_timestamp, valid_events, aware_datetimes)


@pytest.mark.parametrize("event_type", ev.EVENT_TYPES, ids=ev.EVENT_TYPE_NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_every_event_type_round_trips(event_type: type[ev.BaseEvent], data: st.DataObject) -> None:
    event = data.draw(st.builds(_with_timestamp, events_of(event_type), aware_datetimes))
    decoded = decode_event(encode_event(event), RECEIVED_AT)
    assert decoded == event
    assert type(decoded) is event_type


@given(timestamped_events)
def test_valid_events_round_trip_unchanged(event: ev.BaseEvent) -> None:
    decoded = decode_event(encode_event(event), RECEIVED_AT)
    assert not isinstance(decoded, DeadLetter), decoded.reason
    assert decoded == event
    assert decoded.timestamp is not None and event.timestamp is not None
    assert decoded.timestamp.utcoffset() == event.timestamp.utcoffset()
    # Encoding is canonical: a second trip yields the same bytes.
    assert encode_event(decoded) == encode_event(event)


@given(valid_events)
def test_missing_timestamp_is_the_receive_time(event: ev.BaseEvent) -> None:
    untimed = msgspec.structs.replace(event, timestamp=None)
    decoded = decode_event(encode_event(untimed), RECEIVED_AT)
    assert isinstance(decoded, ev.BaseEvent)
    assert decoded.timestamp == datetime.fromtimestamp(RECEIVED_AT, tz=UTC)
    assert decoded.ts == RECEIVED_AT
    assert decoded == msgspec.structs.replace(untimed, timestamp=decoded.timestamp)


# Specific rejections: the reason must tell an operator what to fix -----------


def _decode(obj: dict[str, Any]) -> ev.BaseEvent | DeadLetter:
    return decode_event(orjson.dumps(obj), RECEIVED_AT)


def test_event_without_any_identity_is_dead_lettered() -> None:
    raw = orjson.dumps({"type": "page_view", "event_id": "e1"})
    result = decode_event(raw, RECEIVED_AT)
    assert isinstance(result, DeadLetter)
    assert "customer_id or anonymous_id" in result.reason
    assert result.raw == raw


def test_anonymous_id_alone_is_enough_and_keys_the_event() -> None:
    result = _decode({"type": "page_view", "event_id": "e1", "anonymous_id": "a9"})
    assert isinstance(result, ev.PageView)
    assert result.customer_key == "anon:a9"


def test_wrong_field_type_names_the_field_path() -> None:
    result = _decode({"type": "product_view", "event_id": "e1", "customer_id": "c1", "sku": 42})
    assert isinstance(result, DeadLetter)
    assert "$.sku" in result.reason
    assert result.reason.startswith("invalid event")


def test_nested_field_errors_name_the_nested_path() -> None:
    result = _decode(
        {
            "type": "order_placed",
            "event_id": "e1",
            "customer_id": "c1",
            "order_id": "o1",
            "total": 10,
            "items": [{"sku": "s1", "price": -1}],
        }
    )
    assert isinstance(result, DeadLetter)
    assert "$.items[0].price" in result.reason


@pytest.mark.parametrize("stamp", ["2024-05-01T12:00:00", "2024-05-01 12:00:00"])
def test_naive_timestamp_is_rejected(stamp: str) -> None:
    """Without an offset the instant is ambiguous; guessing UTC would skew timers."""
    result = _decode(
        {"type": "page_view", "event_id": "e1", "customer_id": "c1", "timestamp": stamp}
    )
    assert isinstance(result, DeadLetter)
    assert "offset" in result.reason


def test_offset_timestamp_keeps_its_instant() -> None:
    result = _decode(
        {
            "type": "page_view",
            "event_id": "e1",
            "customer_id": "c1",
            "timestamp": "2024-05-01T14:00:00+02:00",
        }
    )
    assert isinstance(result, ev.PageView)
    assert result.timestamp == datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"type": "teleport", "event_id": "e1", "customer_id": "c1"}, "teleport"),
        ({"event_id": "e1", "customer_id": "c1"}, "type"),
        ({"type": "page_view", "customer_id": "c1"}, "event_id"),
        ({"type": "page_view", "event_id": "", "customer_id": "c1"}, "$.event_id"),
        (
            {"type": "page_view", "event_id": "e1", "customer_id": "c1", "channel": "fax"},
            "$.channel",
        ),
        (
            {
                "type": "add_to_cart",
                "event_id": "e1",
                "customer_id": "c1",
                "sku": "s",
                "price": 1,
                "quantity": 0,
            },
            "$.quantity",
        ),
        (
            {
                "type": "order_placed",
                "event_id": "e1",
                "customer_id": "c1",
                "order_id": "o",
                "total": 1,
                "currency": "eur",
            },
            "$.currency",
        ),
    ],
)
def test_invalid_events_say_why(obj: dict[str, Any], fragment: str) -> None:
    result = _decode(obj)
    assert isinstance(result, DeadLetter)
    assert fragment in result.reason


def test_undecodable_bytes_say_so() -> None:
    result = decode_event(b"{not json", RECEIVED_AT)
    assert isinstance(result, DeadLetter)
    assert result.reason.startswith("undecodable")
    assert result.raw == b"{not json"


def test_unknown_extra_fields_are_tolerated() -> None:
    """Producers may be newer than the engine; extra fields must not dead-letter events."""
    result = _decode(
        {
            "type": "page_view",
            "event_id": "e1",
            "customer_id": "c1",
            "experiment": "b",
            "context": {"ip": "1.2.3.4", "screen": "1080p"},
        }
    )
    assert isinstance(result, ev.PageView)
    assert result.context == ev.Context(ip="1.2.3.4")


def test_currency_with_trailing_newline_is_rejected() -> None:
    result = _decode(
        {
            "type": "order_placed",
            "event_id": "e1",
            "customer_id": "c1",
            "order_id": "o",
            "total": 1,
            "currency": "EUR\n",
        }
    )
    assert isinstance(result, DeadLetter)
