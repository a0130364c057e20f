"""The policy's promises, over random streams of contexts and rewards.

Whatever customers do: a chosen action is always eligible, the control is
the answer when nothing else is, hold-outs take their share, decision ids are
the same on a replay and never repeat, a reward after the window is never
credited, the memory of pending decisions stays within its bound, and a
restored policy carries on exactly as the running one would have.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.nba.features import FEATURE_NAMES
from engine.nba.policy import NextBestAction
from engine.nba.records import Context, Decision, Effect, Input, Outcome, Signal, decision_id
from tests.nba_helpers import ACTIONS, T0, book, context, signal

OFFERS = ACTIONS[:-1]  # all but the control
HOUR = 3600.0

# A few customers' worth of contexts: drawing 12 floats per step would make
# the examples slow to generate and to shrink, and teach the properties nothing.
features = st.sampled_from(
    [(1.0, *[(i * 7 + j * 3) % 11 / 10 for j in range(len(FEATURE_NAMES) - 1)]) for i in range(8)]
)


_STEP = st.tuples(
    st.sampled_from((0.0, 1.0, 60.0, 1800.0, 3700.0)),  # time since the step before
    st.integers(0, 39),  # the customer (folded into the stream's customer count)
    st.sampled_from(("context", "context", "reward", "explicit")),
    st.integers(0, 2 ** len(OFFERS) - 1),  # the eligible offers, as bits
    st.sampled_from((0.2, 0.5, 1.0)),  # a reward's value
    st.integers(0, 1000),  # which earlier decision an explicit reward names
    features,
)


def streams(customers: int = 6, max_steps: int = 60) -> st.SearchStrategy[list[Input]]:
    """Contexts and rewards of a few customers, in event-time order."""
    return st.lists(_STEP, min_size=1, max_size=max_steps).map(
        lambda steps: _inputs(steps, customers)
    )


def _inputs(
    steps: list[tuple[float, int, str, int, float, int, tuple[float, ...]]], n: int
) -> list[Input]:
    at = T0
    out: list[Input] = []
    origins: list[tuple[str, str]] = []
    for i, (gap, who_n, kind, mask, value, pick, x) in enumerate(steps):
        at += gap
        who = f"c{who_n % n}"
        if kind == "context":
            eligible = (*[a for j, a in enumerate(OFFERS) if mask >> j & 1], "nothing")
            out.append(context(who, at, f"e{i}", eligible, x))
            origins.append((who, f"e{i}"))
            continue
        target = ""
        if kind == "explicit" and origins:
            target = decision_id(*origins[pick % len(origins)])
        out.append(
            Signal(
                customer_id=who,
                at=at,
                value=value,
                source="explicit" if kind == "explicit" else "order_placed",
                decision_id=target,
                explicit=kind == "explicit",
            )
        )
    return out


def run(policy: NextBestAction, inputs: Sequence[Input]) -> list[Effect]:
    return policy.handle(inputs)


def decisions(effects: Sequence[Effect]) -> list[Decision]:
    return [e for e in effects if isinstance(e, Decision)]


def outcomes(effects: Sequence[Effect]) -> list[Outcome]:
    return [e for e in effects if isinstance(e, Outcome)]


@settings(max_examples=150, deadline=None)
@given(streams(), st.sampled_from((0.0, 0.1, 1.0)), st.sampled_from((0.0, 30.0)))
def test_a_chosen_action_is_always_eligible(
    inputs: list[Input], exploration: float, holdout: float
) -> None:
    policy = NextBestAction(book(exploration=exploration, holdout=holdout))
    by_origin = {i.origin: i for i in inputs if isinstance(i, Context)}
    for d in decisions(run(policy, inputs)):
        ctx = by_origin[d.origin]
        assert d.action in ctx.eligible
        assert d.eligible == ctx.eligible
        assert 0.0 < d.propensity <= 1.0
        if d.explored:
            assert d.propensity >= exploration / len(d.eligible) - 1e-9


@settings(max_examples=100, deadline=None)
@given(streams(), st.sampled_from((0.0, 0.5, 1.0)))
def test_nothing_when_nothing_else_is_eligible(inputs: list[Input], exploration: float) -> None:
    only_control = [
        context(i.customer_id, i.at, i.origin, ("nothing",), i.features)
        if isinstance(i, Context)
        else i
        for i in inputs
    ]
    policy = NextBestAction(book(exploration=exploration))
    for d in decisions(run(policy, only_control)):
        assert d.action == "nothing"
        assert d.forced and d.propensity == 1.0 and not d.explored
    assert all(not o.learned for o in outcomes(run(policy, [])))


def test_a_forced_decision_gives_way_to_a_real_choice() -> None:
    policy = NextBestAction(book())
    first = decisions(policy.handle([context("c", T0, "e1", ("nothing",))]))
    assert first[0].forced
    effects = policy.handle([context("c", T0 + 5, "e2", ACTIONS)])
    [settled] = outcomes(effects)
    assert settled.decision_id == first[0].decision_id and settled.reason == "superseded"
    assert not settled.learned
    [second] = decisions(effects)
    assert not second.forced


@settings(max_examples=10, deadline=None)
@given(st.floats(0.0, 0.6), st.integers(0, 10_000))
def test_the_holdout_takes_its_share(share: float, salt: int) -> None:
    policy = NextBestAction(book(holdout=share * 100, max_pending=5000))
    n = 2000
    made = decisions(policy.handle([context(f"{salt}-{i}", T0, "e") for i in range(n)]))
    held = [d for d in made if d.holdout]
    assert abs(len(held) / n - share) < 0.05  # over 4 standard deviations at n = 2000
    assert all(d.action == "nothing" and d.propensity == 1.0 for d in held)


def test_a_holdout_customer_is_always_held_out_and_teaches_nothing() -> None:
    policy = NextBestAction(book(holdout=50))
    made = decisions(policy.handle([context(f"c{i}", T0, "e") for i in range(200)]))
    held = {d.customer_id for d in made if d.holdout}
    again = decisions(policy.handle([context(c, T0 + 2 * HOUR, "f") for c in sorted(held)]))
    assert {d.customer_id for d in again if d.holdout} == held
    rewarded = policy.handle([signal(c, T0 + 2 * HOUR + 1, 1.0) for c in sorted(held)])
    assert all(o.holdout and not o.learned and o.reward == 1.0 for o in outcomes(rewarded))


@settings(max_examples=100, deadline=None)
@given(streams(), st.sampled_from((0.0, 0.2)), st.sampled_from((0.0, 20.0)))
def test_a_replay_makes_the_same_decisions_with_the_same_ids(
    inputs: list[Input], exploration: float, holdout: float
) -> None:
    first = run(NextBestAction(book(exploration=exploration, holdout=holdout)), inputs)
    second = run(NextBestAction(book(exploration=exploration, holdout=holdout)), inputs)
    assert first == second
    ids = [d.decision_id for d in decisions(first)]
    assert len(ids) == len(set(ids))


@given(st.lists(st.tuples(st.text(min_size=1), st.text(min_size=1)), unique=True, max_size=200))
def test_decision_ids_are_unique_per_customer_and_origin(pairs: list[tuple[str, str]]) -> None:
    ids = [decision_id(c, o) for c, o in pairs]
    assert len(set(ids)) == len(ids)
    assert ids == [decision_id(c, o) for c, o in pairs]


def test_the_same_input_twice_makes_one_decision() -> None:
    policy = NextBestAction(book())
    ctx = context("c", T0, "e1")
    assert len(decisions(policy.handle([ctx]))) == 1
    assert policy.handle([ctx]) == []


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from((("90s", 90.0), ("1h", HOUR), ("24h", 24 * HOUR), ("7d", 7 * 24 * HOUR))),
    st.floats(0.0, 1.0),
    st.sampled_from((0.2, 0.5, 1.0)),
    st.booleans(),
)
def test_a_reward_after_the_window_is_not_credited(
    window: tuple[str, float], where: float, value: float, explicit: bool
) -> None:
    text, window_s = window
    policy = NextBestAction(book(window=text))
    [made] = decisions(policy.handle([context("c", T0, "e1", ("bundle", "discount", "nothing"))]))
    at = T0 + where * 2 * window_s  # half of them inside the window, half after it
    reward = Signal(
        customer_id="c",
        at=at,
        value=value,
        source="order_placed",
        decision_id=made.decision_id if explicit else "",
        explicit=explicit,
    )
    settled = outcomes(policy.handle([reward]) + policy.advance(T0 + 3 * window_s))
    [outcome] = settled
    weight = 0.5 if made.action == "discount" else 1.0
    if at < T0 + window_s:
        assert outcome.reward == round(value * weight, 6)
        assert outcome.reason in ("explicit", "converted", "expired")
    else:
        assert outcome.reward == 0.0 and outcome.reason == "expired"
        assert outcome.settled_at == made.expires_at


def test_a_decision_keeps_its_best_reward_and_settles_at_the_top_one() -> None:
    policy = NextBestAction(book())
    [made] = decisions(policy.handle([context("c", T0, "e1", ("bundle", "nothing"))]))
    assert policy.handle([signal("c", T0 + 1, 0.2), signal("c", T0 + 2, 0.5)]) == []
    [outcome] = outcomes(policy.handle([signal("c", T0 + 3, 1.0)]))
    expected = 1.0 if made.action != "discount" else 0.5
    assert outcome.reward == expected and outcome.reason == "converted"
    assert outcome.learned == (not made.forced and not made.holdout)


def test_an_explicit_reward_settles_at_once_with_the_best_it_has() -> None:
    policy = NextBestAction(book())
    [made] = decisions(policy.handle([context("c", T0, "e1", ("bundle", "nothing"))]))
    policy.handle([signal("c", T0 + 1, 0.5)])
    [outcome] = outcomes(policy.reward(made.decision_id, "c", 0.2, T0 + 2))
    assert outcome.reason == "explicit" and outcome.reward == 0.5
    # Another customer cannot reward it, nor can anyone once it is settled.
    assert policy.reward(made.decision_id, "c", 1.0, T0 + 3) == []


def test_a_decision_stands_while_its_action_stays_eligible() -> None:
    policy = NextBestAction(book(exploration=0.0))
    [made] = decisions(policy.handle([context("c", T0, "e1", ("bundle", "discount", "nothing"))]))
    assert policy.handle([context("c", T0 + 60, "e2", (made.action, "nothing"))]) == []
    others = (*[a for a in ("bundle", "discount") if a != made.action], "nothing")
    if made.action != "nothing":
        effects = policy.handle([context("c", T0 + 120, "e3", others)])
        assert [o.reason for o in outcomes(effects)] == ["superseded"]
        assert decisions(effects)[0].action in others


@settings(max_examples=100, deadline=None)
@given(streams(customers=40, max_steps=120), st.integers(1, 8))
def test_pending_decisions_stay_within_their_bound(inputs: list[Input], limit: int) -> None:
    policy = NextBestAction(book(max_pending=limit, window="30d"))
    made: set[str] = set()
    settled: set[str] = set()
    for item in inputs:
        effects = policy.handle([item])
        made |= {d.decision_id for d in decisions(effects)}
        settled |= {o.decision_id for o in outcomes(effects)}
        assert len(policy.ledger) <= limit
        assert len(policy.ledger._deadlines) <= 2 * limit + 65
    # Every decision is either still waiting or has settled exactly once.
    waiting = {p.decision_id for p in policy.ledger}
    assert waiting | settled == made and not waiting & settled


@settings(max_examples=60, deadline=None)
@given(streams(max_steps=80), st.integers(0, 80), st.sampled_from((0.0, 0.3)))
def test_a_restored_policy_carries_on_as_the_running_one(
    inputs: list[Input], cut: int, exploration: float
) -> None:
    actions = book(exploration=exploration, window="2h")
    running = NextBestAction(actions)
    running.handle(inputs[:cut])
    restored = NextBestAction.restore(actions, running.snapshot())
    assert restored.handle(inputs[cut:]) == running.handle(inputs[cut:])
    assert restored.advance(T0 + 1e6) == running.advance(T0 + 1e6)


def test_the_propensity_of_a_fresh_policy_is_the_share_of_a_tie() -> None:
    policy = NextBestAction(book(exploration=0.0))
    made = decisions(policy.handle([context(f"c{i}", T0, "e", ACTIONS) for i in range(400)]))
    assert all(d.propensity == 0.25 for d in made)  # every action ties before any learning
    counts = {a: sum(d.action == a for d in made) for a in ACTIONS}
    assert all(60 < n < 140 for n in counts.values()), counts  # ties are shared evenly


def test_the_policy_learns_which_action_pays() -> None:
    """Customers with a cart buy after a discount, the others after a bundle:
    after some rounds the greedy choice follows the context."""
    policy = NextBestAction(book(exploration=0.1, window="1h"))
    offered = ("discount", "bundle", "nothing")
    cart = (1.0,) + (0.0,) * 7 + (1.0,) + (0.0,) * 3
    browse = (1.0,) + (0.0,) * 6 + (1.0,) + (0.0,) * 4
    at = T0
    for i in range(1500):
        at += 10.0
        x = cart if i % 2 else browse
        effects = policy.handle([context(f"c{i}", at, "e", offered, x)])
        [made] = decisions(effects)
        pays = (x is cart and made.action == "discount") or (
            x is browse and made.action == "bundle"
        )
        if pays:
            policy.handle([signal(f"c{i}", at + 1, 1.0)])
    late = [
        decisions(policy.handle([context(f"t{i}", at + 10 + i, "e", offered, x)]))[0]
        for i, x in enumerate([cart, browse] * 50)
    ]
    greedy = [d for d in late if not d.explored]
    assert all(d.action == ("discount" if d.features["cart"] == 1.0 else "bundle") for d in greedy)
