"""What Segment's servers add, done by Pulse's mapping: alias and group calls,
an id for a call sent without messageId, times corrected for clock skew."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from api.segment import (
    DERIVED_ID_PREFIX,
    NOT_CONTENT,
    SegmentError,
    derived_message_id,
    flat_traits,
    parse_time,
    to_pulse,
)
from engine.decode import DeadLetter, decode_event
from engine.events import Alias, BaseEvent, Group

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)


def pulse(message: dict[str, Any], received: datetime | None = RECEIVED) -> BaseEvent:
    decoded = decode_event(msgspec.json.encode(to_pulse(message, received_at=received).event), 0.0)
    assert not isinstance(decoded, DeadLetter), decoded.reason
    return decoded


# Alias and group --------------------------------------------------------------------------


def test_an_alias_names_the_previous_id_as_the_anonymous_id() -> None:
    event = pulse({"type": "alias", "previousId": "39239-239239", "userId": "019mr8mf4r"})
    assert isinstance(event, Alias)
    assert (event.customer_id, event.anonymous_id) == ("019mr8mf4r", "39239-239239")


def test_an_alias_keeps_the_previous_id_not_its_own_anonymous_id() -> None:
    event = pulse({"type": "alias", "previousId": "p-1", "anonymousId": "a-1", "userId": "u-1"})
    assert (event.customer_id, event.anonymous_id) == ("u-1", "p-1")


def test_a_correction_past_the_calendar_leaves_the_calls_own_time() -> None:
    event = pulse(
        {
            "type": "page",
            "anonymousId": "a",
            "originalTimestamp": "2000-01-01T00:00:00Z",
            "sentAt": "4026-01-01T00:00:00Z",
        }
    )
    assert event.timestamp == datetime(2000, 1, 1, tzinfo=UTC)
    assert event.received_at == RECEIVED


def test_a_group_puts_group_id_and_flat_traits_on_the_event() -> None:
    event = pulse(
        {
            "type": "group",
            "userId": "019mr8mf4r",
            "groupId": "8e9df332ac",
            "traits": {
                "name": "Initech",
                "industry": "Technology",
                "employees": 420,
                "address": {"city": "Austin", "geo": {"lat": 30.2}},
                "tags": ["a", "b"],
                "website": None,
            },
        }
    )
    assert isinstance(event, Group)
    assert event.group_id == "8e9df332ac"
    assert event.traits == {
        "name": "Initech",
        "industry": "Technology",
        "employees": 420,
        "address.city": "Austin",
        "address.geo.lat": 30.2,
    }


def test_a_numeric_group_id_is_taken_as_text() -> None:
    assert isinstance(event := pulse({"type": "group", "userId": "u", "groupId": 42}), Group)
    assert event.group_id == "42"


def test_flat_traits_keep_scalars_only() -> None:
    assert flat_traits({"a": {"b": True}, "c": [1], "d": None, "e": 1.5}) == {"a.b": True, "e": 1.5}


# Times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2012-12-02T00:30:08.276Z", datetime(2012, 12, 2, 0, 30, 8, 276000, tzinfo=UTC)),
        # Segment's own batch example writes the month without a zero.
        ("2015-2-02T00:30:08.276Z", datetime(2015, 2, 2, 0, 30, 8, 276000, tzinfo=UTC)),
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00+0200", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
        ("2024-05-01 10:00:00.1234567z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00-01:30", datetime(2024, 5, 1, 11, 30, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_segment_reads_them(text: str, expected: datetime) -> None:
    assert parse_time({"timestamp": text}, "timestamp") == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2024-02-30T00:00:00Z",
        "2024-05-01T25:00Z",
        "2024-05-01",
        "2024-05-01T10:00",
    ],
)
def test_a_time_that_is_not_one_names_the_field(text: str) -> None:
    with pytest.raises(SegmentError) as info:
        parse_time({"sentAt": text}, "sentAt")
    assert info.value.field == "sentAt"


def test_with_sent_at_the_time_is_corrected_for_the_clients_clock() -> None:
    """The client's clock is an hour fast: it stamped the call 10 s before sending."""
    event = pulse(
        {
            "type": "track",
            "userId": "u",
            "event": "Cart Viewed",
            "timestamp": "2024-05-01T13:00:00.000Z",
            "sentAt": "2024-05-01T13:00:10.000Z",
        }
    )
    assert event.timestamp == RECEIVED - timedelta(seconds=10)
    assert event.received_at == RECEIVED


def test_with_sent_at_original_timestamp_is_the_calls_own_time() -> None:
    event = pulse(
        {
            "type": "page",
            "anonymousId": "a",
            "originalTimestamp": "2024-05-01T11:00:00Z",
            "sentAt": "2024-05-01T11:00:01Z",
        }
    )
    assert event.timestamp == RECEIVED - timedelta(seconds=1)


def test_every_time_a_call_gives_must_be_one() -> None:
    """Even one the event does not use: the call is not what it says it is."""
    message = {"type": "page", "anonymousId": "a", "timestamp": "2024-05-01T10:00:00Z"}
    with pytest.raises(SegmentError) as info:
        to_pulse(message | {"originalTimestamp": "later"}, received_at=RECEIVED)
    assert info.value.field == "originalTimestamp"


def test_with_sent_at_and_no_time_of_its_own_the_call_happened_when_received() -> None:
    event = pulse({"type": "page", "anonymousId": "a", "sentAt": "2020-01-01T00:00:00Z"})
    assert event.timestamp == RECEIVED


def test_without_sent_at_the_calls_time_stands_and_the_receive_time_is_kept() -> None:
    event = pulse({"type": "page", "anonymousId": "a", "timestamp": "2012-12-02T00:31:29.738Z"})
    assert event.timestamp == datetime(2012, 12, 2, 0, 31, 29, 738000, tzinfo=UTC)
    assert event.received_at == RECEIVED


# The id of a call without messageId ---------------------------------------------------------

# A call's "type" is its kind (the endpoint's, or read from it), given apart.
keys = st.text(min_size=1, max_size=6).filter(lambda k: k not in NOT_CONTENT | {"type"})
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)
calls = st.dictionaries(keys, values, max_size=6)
kinds = st.sampled_from(["track", "identify", "page", "screen", "alias", "group"])


def json_round_trip(message: dict[str, Any]) -> dict[str, Any]:
    """What the collector sees of a call: its JSON decoded (-0.0 stays, 1.0 is not 1)."""
    out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(message))
    return out


@given(calls, kinds)
def test_the_same_content_gets_the_same_id(message: dict[str, Any], kind: str) -> None:
    message = json_round_trip(message)
    first = derived_message_id(message, kind)
    assert first.startswith(DERIVED_ID_PREFIX) and len(first) <= 256
    assert derived_message_id(copy.deepcopy(message), kind) == first
    reordered = dict(reversed(list(message.items())))
    assert derived_message_id(reordered, kind) == first


@given(calls, kinds, st.sampled_from(sorted(NOT_CONTENT)), scalars)
def test_what_differs_between_two_sends_does_not_change_the_id(
    message: dict[str, Any], kind: str, field: str, value: Any
) -> None:
    message = json_round_trip(message)
    resent = {**message, field: value}
    assert derived_message_id(resent, kind) == derived_message_id(message, kind)


@given(calls, calls, kinds, kinds)
def test_any_change_to_the_content_changes_the_id(
    one: dict[str, Any], other: dict[str, Any], kind: str, other_kind: str
) -> None:
    one, other = json_round_trip(one), json_round_trip(other)
    assume(msgspec.json.encode(one, order="sorted") != msgspec.json.encode(other, order="sorted"))
    assert derived_message_id(one, kind) != derived_message_id(other, kind)
    if kind != other_kind:
        assert derived_message_id(one, kind) != derived_message_id(one, other_kind)


@given(calls, keys, values)
def test_changing_one_value_changes_the_id(message: dict[str, Any], key: str, value: Any) -> None:
    message = json_round_trip(message)
    changed = json_round_trip({**message, key: value})
    assume(
        msgspec.json.encode(changed, order="sorted") != msgspec.json.encode(message, order="sorted")
    )
    assert derived_message_id(changed, "track") != derived_message_id(message, "track")


def test_a_call_without_message_id_gets_the_derived_one() -> None:
    message = {"userId": "019mr8mf4r", "event": "Item Purchased", "writeKey": "K"}
    event = pulse(message | {"type": "track"})
    assert event.event_id == derived_message_id(message, "track")
    # The same call to /v1/track (type implied) and in a batch (type given) is one call.
    assert to_pulse(message, "track").event["event_id"] == event.event_id
    # Sent again later, with another sentAt: the same id, so it counts once.
    again = to_pulse(message | {"sentAt": "2030-01-01T00:00:00Z"}, "track", RECEIVED)
    assert again.event["event_id"] == event.event_id
