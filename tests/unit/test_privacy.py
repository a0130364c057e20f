"""Erasure: a customer's data goes, and replaying their history cannot bring it back."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from engine import events as ev
from engine.control import decode_control, encode_control
from engine.customer import Engine, ProfileRemoved, SegmentsChanged
from engine.identity import ToCustomer, erasure_inputs, link_of, resolve
from engine.privacy import EraseAnonymous, EraseCustomer
from engine.profile import CustomerState

T0 = 1_700_000_000.0
ENGINE = Engine()


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def cart(eid: str, ts: float, customer: str | None = "c", anon: str | None = None) -> ev.AddToCart:
    return ev.AddToCart(
        event_id=eid, customer_id=customer, anonymous_id=anon, timestamp=at(ts), sku="s", price=5.0
    )


def _history(n: int) -> CustomerState:
    state: CustomerState | None = None
    for i in range(n):
        state, _ = ENGINE.apply(state, cart(f"e{i}", T0 + i))
    assert state is not None
    return state


def test_erasure_removes_the_profile_and_its_segments() -> None:
    state = _history(3)
    assert "active_cart" in state.segments
    tomb, effects = Engine.erase(state, "c", T0 + 100)
    assert ProfileRemoved("c") in effects
    [seg] = [e for e in effects if isinstance(e, SegmentsChanged)]
    assert seg.added == () and "active_cart" in seg.removed
    assert tomb.events_total == 0 and tomb.cart == {} and tomb.erased_at == T0 + 100


def test_replaying_history_after_erasure_cannot_resurrect_the_profile() -> None:
    tomb, _ = Engine.erase(_history(3), "c", T0 + 100)
    for i in range(3):
        tomb, effects = ENGINE.apply(tomb, cart(f"e{i}", T0 + i))
        assert effects == []
    assert tomb.events_total == 0 and tomb.ignored_after_erasure == 3


def test_activity_after_the_erasure_starts_a_fresh_profile() -> None:
    tomb, _ = Engine.erase(_history(3), "c", T0 + 100)
    state, _ = ENGINE.apply(tomb, cart("new", T0 + 200))
    assert state.events_total == 1 and state.cart_quantity == 1
    assert state.erased_at == T0 + 100  # older history still cannot come back


def test_erasure_reaches_linked_anonymous_ids() -> None:
    request = EraseCustomer(customer_id="c", requested_at=T0 + 100, anonymous_ids=("x", "y"))
    inputs = erasure_inputs(request)
    assert inputs[0] == ToCustomer("c", erase_at=T0 + 100)
    assert inputs[1:] == [EraseAnonymous("x", T0 + 100), EraseAnonymous("y", T0 + 100)]


def test_an_erased_anonymous_id_forgets_its_profile_and_alias() -> None:
    anon, _ = resolve(ENGINE, None, cart("a1", T0, customer=None, anon="x"))
    anon, effects = resolve(ENGINE, anon, EraseAnonymous("x", T0 + 100))
    assert ProfileRemoved("anon:x") in effects
    assert anon.profile is None and anon.customer_id is None
    # A replayed identify from before the erasure does not relink.
    link = link_of(
        ev.Identify(event_id="i", customer_id="c", anonymous_id="x", timestamp=at(T0 + 50))
    )
    assert link is not None
    anon, effects = resolve(ENGINE, anon, link)
    assert effects == [] and anon.customer_id is None
    anon, effects = resolve(ENGINE, anon, cart("a1", T0, customer=None, anon="x"))
    assert effects == [] and anon.profile is None


def test_control_messages_round_trip_and_reject_bad_input() -> None:
    message = EraseCustomer(customer_id="c", requested_at=T0, request_id="r1", anonymous_ids=("x",))
    assert decode_control(encode_control(message)) == message
    with pytest.raises(msgspec.ValidationError, match="customer_id"):
        decode_control(b'{"type":"erase_customer","requested_at":1}')
    with pytest.raises(msgspec.DecodeError):
        decode_control(b"\xff")
