"""Alias and group: merging two known customers, and the customer's account.

An alias goes the way of an identify (its previous id is the event's anonymous
id); when the previous id is a known customer's, that customer's profile is
handed over through Kafka and later events of the id follow it. The
Simulation delivers what the dataflow sends back through Kafka at once, so
these tests see what a profile holds once the stream has settled.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import events as ev
from engine.control import CustomerMerged, decode_control, encode_control
from engine.customer import Engine, Forwarded, ProfileRemoved, SegmentsChanged, TriggerFired
from engine.identity import MergeRequest, ToCustomer, absorb, link_of
from engine.merge import merge_states
from engine.profile import Account, CustomerState, decode_state
from engine.rules.simulate import Simulation
from engine.segments import segments_of
from tests.rules_helpers import compile_rules
from tests.unit.test_customer import CART_RULES

T0 = 1_700_000_000.0
DELAY = 30 * 60.0


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def alias(eid: str, ts: float, previous: str, customer: str) -> ev.Alias:
    return ev.Alias(event_id=eid, customer_id=customer, anonymous_id=previous, timestamp=at(ts))


def add(eid: str, ts: float, customer: str | None = None, anon: str | None = None) -> ev.AddToCart:
    return ev.AddToCart(
        event_id=eid,
        customer_id=customer,
        anonymous_id=anon,
        timestamp=at(ts),
        sku=f"sku-{eid}",
        price=5.0,
    )


def order(eid: str, ts: float, customer: str, total: float) -> ev.OrderPlaced:
    return ev.OrderPlaced(
        event_id=eid, customer_id=customer, timestamp=at(ts), order_id=f"o-{eid}", total=total
    )


def group(eid: str, ts: float, customer: str, group_id: str, **traits: ev.AccountTrait) -> ev.Group:
    return ev.Group(
        event_id=eid, customer_id=customer, timestamp=at(ts), group_id=group_id, traits=traits
    )


def fired(effects: Sequence[object]) -> list[TriggerFired]:
    return [e for e in effects if isinstance(e, TriggerFired)]


# Alias ----------------------------------------------------------------------------------


def test_an_alias_links_its_previous_id_like_an_identify_and_says_it_is_an_alias() -> None:
    link = link_of(alias("a1", T0, "anon-1", "c"))
    assert link is not None and (link.anonymous_id, link.customer_id, link.alias) == (
        "anon-1",
        "c",
        True,
    )
    identify = ev.Identify(event_id="i", customer_id="c", anonymous_id="x", timestamp=at(T0))
    assert link_of(identify) is not None and not link_of(identify).alias  # type: ignore[union-attr]


def test_an_alias_of_an_anonymous_id_merges_its_profile_as_an_identify_does() -> None:
    sim = Simulation(Engine(CART_RULES))
    sim.feed(add("v1", T0, anon="anon-1"))
    sim.feed(alias("a1", T0 + 10, "anon-1", "c"))
    state = sim.customers["c"]
    assert state.cart_quantity == 1 and state.anonymous_ids == ["anon-1"]
    assert state.event_counts == {"add_to_cart": 1, "alias": 1}
    assert "anon-1" not in sim.customers or not sim.customers["anon-1"].events_total
    sim.feed(add("v2", T0 + 20, anon="anon-1"))  # later anonymous events follow
    assert sim.customers["c"].cart_quantity == 2


def test_merging_two_known_customers_moves_profile_points_orders_and_waits() -> None:
    """What docs/identity.md says merging two known customers does."""
    sim = Simulation(Engine(CART_RULES))
    sim.feed(order("o1", T0, "old", total=120.0))
    sim.feed(group("g1", T0 + 1, "old", "acme", plan="pro"))
    sim.feed(order("o2", T0 + 1.5, "new", total=30.0))
    sim.feed(add("c1", T0 + 2, customer="old"))  # arms the abandoned-cart wait
    before = copy.deepcopy((sim.customers["old"], sim.customers["new"]))
    effects = sim.feed(alias("al", T0 + 4, "old", "new"))

    new = sim.customers["new"]
    old_before, new_before = before
    assert new.events_total == old_before.events_total + new_before.events_total + 1
    assert new.orders == 2 and new.revenue == 150.0
    assert sorted(o.order_id for o in new.order_history) == ["o-o1", "o-o2"]
    assert new.loyalty_points == old_before.loyalty_points + new_before.loyalty_points > 0
    assert new.cart_quantity == 1
    assert [(p.rule_id, p.due) for p in new.pending] == [("abandoned_cart", T0 + 2 + DELAY)]
    assert new.account is not None and new.account.id == "acme"
    assert "account:acme" in new.segments and new.merged_ids == ["old"]
    assert "old" in new.anonymous_ids  # an erasure of "new" erases the link too

    old = sim.customers["old"]  # a stub now: nothing of the profile is left there
    assert old.merged_into == "new" and old.events_total == 0 and old.erased_at == -math.inf
    assert ProfileRemoved("old") in effects
    assert any(isinstance(e, SegmentsChanged) and e.customer_key == "old" for e in effects)

    # The wait that the old id armed fires for the customer it went into.
    [trigger] = [f.trigger for f in fired(sim.advance(T0 + 2 + DELAY + 1))]
    assert trigger.customer_id == "new" and trigger.rule_id == "abandoned_cart"

    # Later events of the old id go on to the new one.
    sim.feed(order("o3", T0 + 5000, "old", total=10.0))
    assert sim.customers["new"].orders == 3 and sim.customers["old"].events_total == 0


def test_later_events_of_an_aliased_id_are_forwarded_with_their_own_ids() -> None:
    engine = Engine()
    stub, out = absorb(engine, None, MergeRequest("new", T0), "old")
    assert out == [] and stub.merged_into == "new"  # nothing to hand over yet
    event = order("o9", T0 + 1, "old", total=5.0)
    stub, effects = engine.apply(stub, event)
    assert effects == [Forwarded("new", event)]


def test_a_handed_over_profile_counts_once_however_often_it_arrives() -> None:
    engine = Engine()
    old, _ = engine.apply(None, order("o1", T0, "old", total=50.0))
    _, out = absorb(engine, old, MergeRequest("new", T0 + 1), "old")
    [handed] = [o for o in out if isinstance(o, CustomerMerged)]
    assert decode_control(encode_control(handed)) == handed  # it travels on the control topic
    new, _ = engine.apply(None, order("o2", T0, "new", total=1.0))
    for _ in range(3):  # a replay after a crash delivers it again
        new, _ = absorb(engine, new, handed, "new")
    assert new.orders == 2 and new.revenue == 51.0


def test_the_first_alias_of_an_id_wins() -> None:
    sim = Simulation(Engine())
    sim.feed(order("o1", T0, "old", total=50.0))
    sim.feed(alias("a1", T0 + 1, "old", "first"))
    sim.feed(alias("a2", T0 + 2, "old", "second"))
    assert sim.customers["first"].orders == 1
    assert sim.customers["second"].orders == 0
    assert sim.customers["old"].merged_into == "first"


def test_a_cycle_of_aliases_ends_in_one_live_profile() -> None:
    """A into B, then B into A: the hand-over finds its way back and A lives again."""
    sim = Simulation(Engine())
    sim.feed(order("o1", T0, "a", total=10.0))
    sim.feed(order("o2", T0 + 1, "b", total=20.0))
    sim.feed(alias("x1", T0 + 2, "a", "b"))
    sim.feed(alias("x2", T0 + 3, "b", "a"))
    live = [c for c, s in sim.customers.items() if not s.merged_into]
    assert live == ["a"] and sim.customers["b"].merged_into == "a"
    assert sim.customers["a"].orders == 2 and sim.customers["a"].revenue == 30.0
    sim.feed(order("o3", T0 + 4, "b", total=1.0))
    assert sim.customers["a"].orders == 3


def test_an_erased_customer_aliased_away_keeps_its_history_erased() -> None:
    engine = Engine()
    state, _ = engine.apply(None, order("o1", T0, "old", total=50.0))
    state, _ = Engine.erase(state, "old", T0 + 10)
    stub, out = absorb(engine, state, MergeRequest("new", T0 + 20), "old")
    assert out == [] and stub.erased_at == T0 + 10
    _, replayed = engine.apply(stub, order("o1", T0, "old", total=50.0))
    assert replayed == []  # history from before the erasure stays erased
    later = order("o2", T0 + 30, "old", total=5.0)
    assert engine.apply(stub, later)[1] == [Forwarded("new", later)]


def test_an_anonymous_profile_reaching_a_stub_goes_on_to_the_customer() -> None:
    engine = Engine()
    stub, _ = absorb(engine, None, MergeRequest("new", T0), "old")
    anonymous, _ = engine.apply(None, add("v1", T0, anon="x"))
    stub, out = absorb(engine, stub, anonymous, "old")
    assert out == [
        CustomerMerged(customer_id="new", previous_id="anon:x", state=anonymous, path=("old",))
    ]


def test_the_alias_event_needs_both_ids() -> None:
    try:
        ev.Alias(event_id="a", timestamp=at(T0), customer_id="c")
    except ValueError:
        return
    raise AssertionError("accepted an alias without its previous id")


def test_an_alias_of_an_id_to_itself_merges_nothing() -> None:
    sim = Simulation(Engine())
    sim.feed(order("o1", T0, "c", total=5.0))
    sim.feed(alias("a1", T0 + 1, "c", "c"))
    state = sim.customers["c"]
    assert not state.merged_into and state.orders == 1 and state.events_total == 2


# Group ----------------------------------------------------------------------------------


def test_a_group_call_puts_the_account_on_the_profile_and_in_a_segment() -> None:
    engine = Engine()
    state, _ = engine.apply(None, group("g1", T0, "c", "acme", plan="pro", employees=420))
    assert state.account == Account(
        id="acme", traits={"plan": "pro", "employees": 420}, updated_at=T0
    )
    assert "account:acme" in state.segments
    state, _ = engine.apply(state, group("g2", T0 + 10, "c", "acme", plan="enterprise"))
    assert state.account is not None
    assert state.account.traits == {"plan": "enterprise", "employees": 420}
    state, effects = engine.apply(state, group("g3", T0 + 20, "c", "initech"))
    assert state.account is not None and state.account.id == "initech"
    assert SegmentsChanged("c", ("account:initech",), ("account:acme",)) in effects


def test_a_late_group_call_does_not_undo_a_later_one() -> None:
    engine = Engine()
    state, _ = engine.apply(None, group("g1", T0 + 10, "c", "acme", plan="pro"))
    state, _ = engine.apply(state, group("g0", T0, "c", "acme", plan="free", seats=5))
    assert state.account is not None and state.account.traits == {"plan": "pro", "seats": 5}
    state, _ = engine.apply(state, group("g-1", T0 - 10, "c", "initech"))
    assert state.account is not None and state.account.id == "acme"


accounts = st.one_of(
    st.none(),
    st.builds(
        Account,
        id=st.sampled_from(["acme", "initech"]),
        traits=st.dictionaries(st.sampled_from("ab"), st.integers(0, 3), max_size=2),
        updated_at=st.sampled_from([T0, T0 + 1, T0 + 2]),
    ),
)


@given(accounts, accounts)
@settings(max_examples=50)
def test_a_merge_keeps_the_account_of_the_later_group_call(
    mine: Account | None, theirs: Account | None
) -> None:
    a = CustomerState(customer_id="c", account=copy.deepcopy(mine))
    b = CustomerState(customer_id="anon:x", account=copy.deepcopy(theirs))
    merged = merge_states(a, b).account
    present = [x for x in (mine, theirs) if x is not None]
    if not present:
        assert merged is None
    else:
        assert merged is not None
        assert merged.updated_at == max(x.updated_at for x in present)
    assert (
        merge_states(CustomerState(customer_id="c"), CustomerState(customer_id="d")).account is None
    )


def test_segments_after_a_group_are_the_recomputed_ones() -> None:
    engine = Engine()
    state, _ = engine.apply(None, group("g1", T0, "c", "acme"))
    assert state.segments == segments_of(state)


def test_a_to_customer_can_carry_each_kind_of_merge() -> None:
    """The dataflow pickles these between workers: every kind must be a plain value."""
    import pickle

    for merge in (
        CustomerState(customer_id="anon:x"),
        MergeRequest("new", T0),
        CustomerMerged(
            customer_id="new", previous_id="old", state=CustomerState(customer_id="old")
        ),
    ):
        item = ToCustomer("c", merge=merge)
        assert pickle.loads(pickle.dumps(item)) == item


def test_an_order_recorded_under_both_ids_counts_once() -> None:
    engine = Engine()
    old, _ = engine.apply(None, order("o1", T0, "old", total=100.0))
    new, _ = engine.apply(None, order("o1", T0, "new", total=100.0))  # the same order
    new, _ = engine.apply(new, order("o2", T0 + 1, "new", total=20.0))
    points = new.loyalty_points
    new, _ = engine.absorb(new, old, "new")
    assert (new.orders, new.revenue, len(new.order_history)) == (2, 120.0, 2)
    assert new.loyalty_points == points


def test_a_snapshot_taken_before_accounts_and_aliases_still_loads() -> None:
    """The state's new fields have defaults, so engine.profile.STATE_VERSION stays:
    a snapshot without them (an older version's) loads as it was."""
    state, _ = Engine().apply(None, order("o1", T0, "c", total=5.0))
    older = msgspec.structs.asdict(state)
    for field in ("account", "merged_into", "merged_ids"):
        del older[field]
    restored = decode_state(msgspec.msgpack.encode(older))
    assert (restored.account, restored.merged_into, restored.merged_ids) == (None, "", [])
    assert restored.orders == 1 and restored == state


def test_rules_read_the_account_and_its_segment() -> None:
    rules = compile_rules(
        {
            "enterprise_welcome.yaml": """
id: enterprise_welcome
trigger: {event: group}
conditions:
  - profile.account_id == "acme"
  - profile.account_traits.plan == "enterprise"
  - profile.account_traits.employees > 100
  - '"account:acme" in profile.segments'
action: {channel: webhook, template: enterprise}
"""
        }
    )
    engine = Engine(rules.assuming_contactable())
    _, effects = engine.apply(None, group("g1", T0, "c1", "acme", plan="enterprise", employees=5))
    assert fired(effects) == []
    _, effects = engine.apply(None, group("g2", T0, "c2", "acme", plan="enterprise", employees=420))
    [trigger] = [f.trigger for f in fired(effects)]
    assert (trigger.rule_id, trigger.customer_id) == ("enterprise_welcome", "c2")
