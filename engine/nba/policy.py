"""The next-best-action policy: decides, waits for rewards, learns.

``handle(inputs)`` takes a customer's ``Context`` and ``Signal`` values in
event-time order and returns ``Decision`` and ``Outcome`` records; ``advance``
settles what the clock has expired. Pure and deterministic: the same inputs
in the same order give the same records from a fresh or a restored policy.

A decision stands for its window while its action stays eligible: the
website shows one offer, not a new one per page view, and the rewards that
follow belong to the offer that was shown. A new decision is made when there
is none, when the window has ended, when the action stopped being eligible,
or when the live one was forced (only the control was eligible) and now
there is a choice.

How a decision chooses:
- a hold-out customer (a stable ``holdout`` share, hashed like the trigger
  rules' hold-outs) gets the control action, propensity 1;
- with only the control eligible, the control, propensity 1 (forced);
- else with probability ``exploration`` a uniformly drawn eligible action,
  otherwise the action with the highest upper confidence bound (ties shared
  evenly). Both draws come from the decision id, so a replay draws alike,
  and the logged propensity is exactly ``(1 - exploration) / ties`` for a
  best action plus ``exploration / eligible``.

Hold-out and forced decisions are recorded and rewarded but not learned
from: a hold-out must measure the policy, not feed it, and a forced one had
no alternative to learn about.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.nba.book import ActionBook
from engine.nba.features import FEATURE_NAMES, FEATURES_VERSION
from engine.nba.linucb import ArmState, LinUcb
from engine.nba.pending import Ledger, Pending
from engine.nba.records import (
    Context,
    Decision,
    Effect,
    Input,
    Outcome,
    Settlement,
    Signal,
    decision_id,
    unit,
)
from engine.rules.guards import holdout_bucket

HOLDOUT_KEY = "next_best_action"  # the hold-out's salt: its own customers, not a rule's
SNAPSHOT_FORMAT = 1


class PolicySnapshot(msgspec.Struct, kw_only=True):
    """Everything a policy needs to carry on after a restart."""

    format: int = SNAPSHOT_FORMAT
    features_version: str
    clock: float
    arms: list[ArmState]
    pending: list[Pending]


class NextBestAction:
    def __init__(self, book: ActionBook) -> None:
        self.book = book
        self.model = LinUcb(book.reward_noise)
        self.ledger = Ledger(book.max_pending)
        self.clock = float("-inf")  # the latest event time seen

    # Inputs

    def handle(self, inputs: Iterable[Input]) -> list[Effect]:
        out: list[Effect] = []
        ledger = self.ledger
        for item in inputs:
            if item.at > self.clock:
                # advance(item.at), without its list when nothing is due (most inputs)
                self.clock = item.at
                due = ledger.next_deadline()
                if due is not None and due <= item.at:
                    out += [self._settle(p, p.deadline, "expired") for p in ledger.due(item.at)]
            if isinstance(item, Signal):
                out += self._credit(item)
            else:
                out += self._decide(item)
        return out

    def reward(self, decision_id: str, customer_id: str, value: float, at: float) -> list[Effect]:
        """An explicit reward (the API's call, once it reaches the policy); the
        value is held to 0..1 (anything else counts as 0)."""
        signal = Signal(
            customer_id=customer_id,
            at=at,
            value=min(1.0, max(0.0, value)) if value == value else 0.0,
            source="explicit",
            decision_id=decision_id,
            explicit=True,
        )
        return self.handle([signal])

    def advance(self, now: float) -> list[Effect]:
        """Settle the decisions whose window has ended by ``now``."""
        if now > self.clock:
            self.clock = now
        return [self._settle(p, p.deadline, "expired") for p in self.ledger.due(now)]

    def next_due(self) -> float | None:
        """When the next window ends (event time), for the dataflow's timer."""
        return self.ledger.next_deadline()

    # Deciding

    def _decide(self, ctx: Context) -> list[Effect]:
        book = self.book
        out: list[Effect] = []
        live = self.ledger.live(ctx.customer_id)
        if live is not None:
            if ctx.at < live.at:
                return []  # older than the live decision: it knows more
            stands = ctx.at < live.deadline and live.action in ctx.eligible
            if stands and not (live.forced and len(ctx.eligible) > 1):
                return []  # the common case, so the id is worked out only past it
        did = decision_id(ctx.customer_id, ctx.origin)
        if self.ledger.get(did) is not None:
            return []  # the same input again (a customer's only pending one is the live one)
        if live is not None:
            out.append(self._settle(live, ctx.at, "superseded"))
        eligible = ctx.eligible or (book.control,)
        holdout = book.holdout > 0 and holdout_bucket(ctx.customer_id, HOLDOUT_KEY) < book.holdout
        forced = len(eligible) == 1
        explored = False
        propensity = 1.0
        if holdout:
            action = book.control
        elif forced:
            action = eligible[0]
        else:
            action, propensity, explored = self._choose(did, eligible, ctx.features)
        learn = not holdout and not forced
        pending = Pending(
            decision_id=did,
            customer_id=ctx.customer_id,
            action=action,
            at=ctx.at,
            deadline=ctx.at + book.window_s,
            eligible=eligible,
            x=ctx.features if learn else (),
            learn=learn,
            holdout=holdout,
            forced=forced,
        )
        out.append(self._record(pending, ctx, propensity, explored))
        for evicted in self.ledger.add(pending):
            out.append(self._settle(evicted, ctx.at, "evicted"))
        return out

    def _choose(
        self, did: str, eligible: tuple[str, ...], x: tuple[float, ...]
    ) -> tuple[str, float, bool]:
        """(action, propensity, explored) for a real choice."""
        epsilon = self.book.exploration
        bounds = self.model.bounds(eligible, x)
        best = max(bounds)
        ties = [a for a, b in zip(eligible, bounds, strict=True) if b == best]
        greedy = ties[int(unit(did, "tie") * len(ties))]
        explored = epsilon > 0 and unit(did, "explore") < epsilon
        action = eligible[int(unit(did, "action") * len(eligible))] if explored else greedy
        share = (1.0 - epsilon) / len(ties) if action in ties else 0.0
        return action, share + epsilon / len(eligible), explored

    def _record(
        self, pending: Pending, ctx: Context, propensity: float, explored: bool
    ) -> Decision:
        action = self.book.by_id.get(pending.action)
        return Decision(
            decision_id=pending.decision_id,
            customer_id=pending.customer_id,
            at=pending.at,
            expires_at=pending.deadline,
            action=pending.action,
            params=dict(action.params) if action is not None else {},
            eligible=pending.eligible,
            propensity=propensity,
            explored=explored,
            holdout=pending.holdout,
            forced=pending.forced,
            origin=ctx.origin,
            context_version=self.book.version,
            profile_version=ctx.profile_version,
            features={n: round(v, 6) for n, v in zip(FEATURE_NAMES, ctx.features, strict=True)},
        )

    # Rewards

    def _credit(self, signal: Signal) -> list[Effect]:
        ledger = self.ledger
        pending = (
            ledger.get(signal.decision_id)
            if signal.decision_id
            else ledger.live(signal.customer_id)
        )
        if pending is None or pending.customer_id != signal.customer_id:
            return []  # settled, expired, unknown, or another customer's id
        if not pending.at <= signal.at < pending.deadline:
            return []  # before the decision, or after its window
        action = self.book.by_id.get(pending.action)
        value = signal.value * (action.weight if action is not None else 1.0)
        if value > pending.reward:
            pending.reward = value
            pending.source = signal.source
        if signal.explicit:
            return [self._settle(pending, signal.at, "explicit")]
        if signal.value >= self.book.top_reward:
            return [self._settle(pending, signal.at, "converted")]
        return []

    def _settle(self, pending: Pending, at: float, reason: Settlement) -> Outcome:
        self.ledger.remove(pending)
        learned = pending.learn and pending.action in self.book.by_id
        if learned:
            self.model.learn(pending.action, pending.x, pending.reward)
        return Outcome(
            decision_id=pending.decision_id,
            customer_id=pending.customer_id,
            action=pending.action,
            decided_at=pending.at,
            settled_at=at,
            reward=round(pending.reward, 6),
            reason=reason,
            source=pending.source,
            holdout=pending.holdout,
            learned=learned,
        )

    # State

    def snapshot(self) -> bytes:
        state = PolicySnapshot(
            features_version=FEATURES_VERSION,
            clock=self.clock,
            arms=self.model.snapshot(),
            pending=sorted(self.ledger, key=lambda p: (p.deadline, p.decision_id)),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def restore(cls, book: ActionBook, raw: bytes) -> NextBestAction:
        """A policy as snapshotted, under ``book`` (which may be a newer version:
        actions it no longer has are not learned, new ones start untrained)."""
        state = msgspec.msgpack.decode(raw, type=PolicySnapshot)
        policy = cls(book)
        policy.clock = state.clock
        if state.features_version == FEATURES_VERSION:
            policy.model.restore(state.arms)
        for pending in state.pending:
            if pending.learn and state.features_version != FEATURES_VERSION:
                pending.learn = False  # its context means something else now
            policy.ledger.keep(pending)
        return policy
