"""The per-customer state machine: ``apply(state, event) -> (state, effects)``.

Pure: no I/O, no clocks, no runtime imports. An event is applied as of its own
timestamp and a pending rule action as of its due time, so the same events
give the same state and the same decisions however fast, late or often they
are processed. The dataflow turns the returned effects into Redis writes and
Kafka records, and asks ``next_due`` when to call ``fire_due``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from engine import events as ev
from engine.loyalty import DEFAULT_PROGRAM, LoyaltyProgram
from engine.merge import merge_states
from engine.pending_labels import CustomerScores
from engine.popularity import ItemSignal, item_signals
from engine.profile import (
    MAX_ORDERS_KEPT,
    RECENT_ITEMS,
    SESSION_GAP_S,
    Account,
    CartLine,
    Consent,
    CustomerState,
    Decayed,
    Engagement,
    OrderRecord,
    Viewed,
    points_refunded,
)
from engine.profile import points_held as points_held  # re-exported for callers
from engine.recs.relations import PairSignal
from engine.recs.shopper import remember
from engine.rules.ruleset import RuleBook, RuleSet
from engine.rules.runtime import Rules
from engine.scores.labels import Example, Scorer, ScoreSettings
from engine.segments import SEGMENT_INPUTS_CHANGED_BY, segments_of
from engine.triggers import Decision
from engine.triggers import TriggerFired as TriggerFired  # re-exported for callers


class ProfileChanged(msgspec.Struct, frozen=True):
    """The customer's serving view must be rewritten from this state."""

    state: CustomerState


class ProfileRemoved(msgspec.Struct, frozen=True):
    """A profile that no longer exists on its own (merged into a known customer)."""

    customer_key: str


class DuplicateDropped(msgspec.Struct, frozen=True):
    customer_key: str
    event_id: str


class SegmentsChanged(msgspec.Struct, frozen=True):
    customer_key: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


class Forwarded(msgspec.Struct, frozen=True):
    """An event of a customer aliased into another: it goes on to that one (the
    dataflow produces it to the events topic, addressed to ``customer_id``)."""

    customer_id: str
    event: ev.BaseEvent


Effect = (
    ProfileChanged
    | TriggerFired
    | Decision
    | ProfileRemoved
    | DuplicateDropped
    | SegmentsChanged
    | ItemSignal
    | PairSignal
    | Forwarded
    | Example
)

# Keys of profiles with only an anonymous id (``BaseEvent.customer_key``): not scored.
ANONYMOUS_PREFIX = "anon:"

# Per customer, at most this many recent event ids are remembered for dedup;
# past it the oldest are forgotten even inside the window.
MAX_SEEN_IDS = 2000


class Engine:
    """The rules in force plus the transition functions."""

    def __init__(
        self,
        rules: RuleBook | RuleSet | None = None,
        dedup_window_s: float = 86400.0,
        loyalty: LoyaltyProgram = DEFAULT_PROGRAM,
        scores: ScoreSettings | None = None,
    ) -> None:
        """``scores``: keep the score models' delayed labels for known customers
        (engine/scores/labels.py) and emit each labelled ``Example`` as an
        effect, for a model elsewhere to learn; None: no scores."""
        book = rules if isinstance(rules, RuleBook) else RuleBook() if rules is None else None
        if book is None:
            assert isinstance(rules, RuleSet)
            book = RuleBook(rules)
        self.book = book
        self.rules = Rules(book, loyalty)
        self.dedup_window_s = dedup_window_s
        self.loyalty = loyalty
        self.scorer = None if scores is None else Scorer(scores, scoring=False)

    def apply(
        self, state: CustomerState | None, event: ev.BaseEvent
    ) -> tuple[CustomerState, list[Effect]]:
        if state is None:
            state = CustomerState(customer_id=event.customer_key)
        ts = event.ts
        if state.erased_at:
            if state.merged_into:  # aliased into another customer (engine/identity.py)
                if ts > state.erased_at and not (
                    # the reverse alias: its own link does the work (identity._pass_on)
                    type(event) is ev.Alias and event.anonymous_id == state.merged_into
                ):
                    return state, [Forwarded(state.merged_into, event)]
                state.ignored_after_erasure += 1
                return state, []
            if ts <= state.erased_at:
                state.ignored_after_erasure += 1
                return state, []
            # New activity after the erasure: a fresh profile.
            state = CustomerState(customer_id=state.customer_id, erased_at=state.erased_at)
        seen = state.seen_ids
        event_id = event.event_id
        if event_id in seen:
            state.duplicates += 1
            return state, [DuplicateDropped(state.customer_id, event_id), ProfileChanged(state)]
        seen[event_id] = ts
        if len(seen) > MAX_SEEN_IDS:
            self._forget_seen_ids(state, ts)
        kind = ev.event_type(event)
        # What was due before this event acts first, on the state it was due
        # on: keeps event-time order when the stream runs behind or replays.
        effects: list[Effect] = []
        for p in state.pending:
            if p.due <= ts:  # something is due by now: Rules.next_due(state) <= ts
                effects.extend(self.rules.fire_due(state, ts))
                break
        scorer = self.scorer
        scores = state.scores
        if scores is not None and scorer is not None and Scorer.due_by(scores, ts):
            effects.extend(scorer.fire_due(scores, state, ts))  # labels known before it
        before = self.rules.watch(state, ts)
        linked = event.anonymous_id
        if (
            linked is not None
            and event.customer_id is not None
            and linked not in state.anonymous_ids
        ):
            state.anonymous_ids.append(linked)
        first = state.events_total == 0
        if first or ts < state.first_seen:
            state.first_seen = ts
        if first or ts - state.last_seen > SESSION_GAP_S:
            state.sessions += 1
            state.session_started_at = ts
        if ts > state.last_seen:
            state.last_seen = ts
        state.events_total += 1
        counts = state.event_counts
        counts[kind] = counts.get(kind, 0) + 1
        update = _PROFILE_UPDATES.get(type(event)) or _update_of(type(event))
        update(state, event, ts, self.loyalty)
        if state.order_history and self.loyalty.points_expire_s is not None:
            # As of the latest event time seen, so an order arriving late is
            # expired as if it had come in order.
            _expire_points(state, state.last_seen, self.loyalty.points_expire_s)
        _count_hour(state, ts)  # after identify traits: its own time zone counts
        if scorer is not None and not state.customer_id.startswith(ANONYMOUS_PREFIX):
            if scores is None:
                scores = state.scores = CustomerScores()
            scorer.on_event(scores, state, event)
        signals = item_signals(event, ts)
        if signals:
            effects.extend(signals)
            # The recommender's memory, and the item pairs the event showed
            # (views, carts and orders are exactly the events with signals).
            effects.extend(remember(state.shopper, event, ts=ts))
        # Segments read only what some event types change (and the tier): on
        # other events they stay as they are, unless this is a fresh profile.
        self._derive(state, ts, effects, first or kind in SEGMENT_INPUTS_CHANGED_BY)
        effects.extend(self.rules.on_event(state, event, ts, before))
        effects.append(ProfileChanged(state))
        return state, effects

    def fire_due(self, state: CustomerState, until: float) -> list[Effect]:
        """Pending rule actions due by ``until`` (event time), decided as of their
        due times, and the score labels known by then."""
        # Neither is part of the serving view: no profile write needed.
        out: list[Effect] = list(self.rules.fire_due(state, until)) if state.pending else []
        scores = state.scores
        if scores is not None and self.scorer is not None and Scorer.due_by(scores, until):
            out.extend(self.scorer.fire_due(scores, state, until))
        return out

    def absorb(
        self, state: CustomerState | None, other: CustomerState, customer_id: str
    ) -> tuple[CustomerState, list[Effect]]:
        """Merge another profile of the same person (an anonymous one) into ``state``."""
        if state is not None and state.erased_at and other.last_seen <= state.erased_at:
            return state, []  # history from before the erasure stays erased
        state = merge_states(state or CustomerState(customer_id=customer_id), other)
        effects: list[Effect] = []
        self._derive(state, state.last_seen, effects)
        effects.append(ProfileChanged(state))
        return state, effects

    @staticmethod
    def erase(
        state: CustomerState | None, customer_key: str, requested_at: float
    ) -> tuple[CustomerState, list[Effect]]:
        """Forget everything about a customer but the time of the erasure."""
        effects: list[Effect] = [ProfileRemoved(customer_key)]
        if state is not None and state.segments:
            effects.append(SegmentsChanged(customer_key, (), tuple(state.segments)))
        erased_at = max(requested_at, state.erased_at if state is not None else 0.0)
        return CustomerState(customer_id=customer_key, erased_at=erased_at), effects

    def _derive(
        self, state: CustomerState, ts: float, effects: list[Effect], inputs_changed: bool = True
    ) -> None:
        """Attributes computed from the rest of the state: tier and segments.

        ``inputs_changed`` False says nothing segments read but the tier can
        have changed (see engine.segments.SEGMENT_INPUTS_CHANGED_BY).
        """
        tier = state.tier
        review_at = state.tier_review_at
        if not tier or state.last_seen >= review_at or ts >= review_at:
            self._update_tier(state, ts)
            inputs_changed = inputs_changed or state.tier != tier
        if not inputs_changed:
            return
        segments = segments_of(state)
        if segments != state.segments:
            old, new = set(state.segments), set(segments)
            effects.append(
                SegmentsChanged(
                    state.customer_id, tuple(sorted(new - old)), tuple(sorted(old - new))
                )
            )
            state.segments = segments

    def _update_tier(self, state: CustomerState, ts: float) -> None:
        """Tier by rolling spend. Recomputed (by _derive) only when it can change:
        after an order, refund or merge (the history changed: ``tier_review_at``
        reset to 0), or once the oldest order in the window may have left it."""
        now = max(state.last_seen, ts)
        since = now - self.loyalty.window_s
        spend = 0.0
        oldest = math.inf
        for order in state.order_history:
            if order.ts >= since:
                spend += order.total - order.refunded
                oldest = min(oldest, order.ts)
        state.tier_review_at = oldest + self.loyalty.window_s
        tier = self.loyalty.tier_for(spend)
        if tier != state.tier:
            state.previous_tier, state.tier, state.tier_changed_at = state.tier, tier, ts

    def _forget_seen_ids(self, state: CustomerState, ts: float) -> None:
        """Past MAX_SEEN_IDS: keep the latest ids within the dedup window."""
        horizon = max(state.last_seen, ts) - self.dedup_window_s
        kept = sorted(((t, i) for i, t in state.seen_ids.items() if t >= horizon), reverse=True)
        state.seen_ids = {i: t for t, i in kept[: MAX_SEEN_IDS * 3 // 4]}

    @staticmethod
    def next_due(state: CustomerState) -> float | None:
        due = Rules.next_due(state)
        scores = state.scores
        if scores is not None and (scores.pending or scores.wake_at):
            label = Scorer.next_due(scores)
            if label is not None and (due is None or label < due):
                return label
        return due


# The profile's own attributes after one event, by the event's class (a match
# over twenty classes costs a microsecond on the events that match none).
_Update = Callable[[CustomerState, Any, float, LoyaltyProgram], None]


def _product_view(state: CustomerState, event: ev.ProductView, ts: float, _: Any) -> None:
    _remember_view(state, event.sku, ts)
    category = event.category
    if category:
        state.category_views[category] = state.category_views.get(category, 0) + 1
        _affinity(state, category, 1.0, ts)


def _add_to_cart(state: CustomerState, event: ev.AddToCart, ts: float, _: Any) -> None:
    sku, price, qty, category = event.sku, event.price, event.quantity, event.category
    if category:
        _affinity(state, category, 3.0, ts)
    if ts < state.last_order_at:
        # Arrived after an order that followed it (another partition,
        # an anonymous id's step): that order bought it, as a merge
        # decides for a whole cart (engine/merge.py).
        return
    line = state.cart.get(sku)
    if line is None:
        state.cart[sku] = CartLine(sku, qty, price, category, event.name, ts)
    else:
        line.quantity += qty
        if ts >= line.price_at:  # the price of the latest add, by event time
            line.price, line.price_at = price, ts
    state.cart_updated_at = max(state.cart_updated_at, ts)


def _remove_from_cart(state: CustomerState, event: ev.RemoveFromCart, ts: float, _: Any) -> None:
    qty = event.quantity
    line = state.cart.get(event.sku)
    if line is not None:
        if qty is None or qty >= line.quantity:
            del state.cart[event.sku]
        else:
            line.quantity -= qty
    state.cart_updated_at = max(state.cart_updated_at, ts)


def _order_placed(
    state: CustomerState, event: ev.OrderPlaced, ts: float, loyalty: LoyaltyProgram
) -> None:
    order_id, total = event.order_id, event.total
    state.orders += 1
    state.revenue += total
    state.last_order_at = max(state.last_order_at, ts)
    record = OrderRecord(order_id, ts, total, points=loyalty.points_for(total))
    state.loyalty_points += record.points
    _record_order(state, record)
    if order_id in state.pending_refunds:
        _settle_early_refund(state, record, state.pending_refunds.pop(order_id))
    for item in event.items:
        if item.category:
            _affinity(state, item.category, 5.0, ts)
    # The cart as of the order is bought; lines added after it stay.
    if ts >= state.cart_updated_at:
        state.cart.clear()
    state.cart_updated_at = max(state.cart_updated_at, ts)


def _order_refunded(
    state: CustomerState, event: ev.OrderRefunded, ts: float, loyalty: LoyaltyProgram
) -> None:
    order_id, amount = event.order_id, event.amount
    state.refunds += 1
    known = next((o for o in state.order_history if o.order_id == order_id), None)
    if known is not None:
        _refund(state, known, amount)
    else:
        # The order is unknown: too old for the history, or not arrived
        # yet. A stated amount counts now; the order, if it comes, is
        # settled against it (see _settle_early_refund).
        if amount is not None:
            state.revenue -= amount
            state.loyalty_points = max(0, state.loyalty_points - loyalty.points_for(amount))
        _remember_pending(state, order_id, amount)


def _points_adjusted(
    state: CustomerState, event: ev.LoyaltyPointsAdjusted, ts: float, _: Any
) -> None:
    state.loyalty_points = max(0, state.loyalty_points + event.points)


def _message_sent(state: CustomerState, event: ev.MessageSent, ts: float, _: Any) -> None:
    _engagement(state, event.message_channel).sent += 1


def _message_opened(state: CustomerState, event: ev.MessageOpened, ts: float, _: Any) -> None:
    _engaged(state, event.message_channel, ts).opened += 1


def _message_clicked(state: CustomerState, event: ev.MessageClicked, ts: float, _: Any) -> None:
    _engaged(state, event.message_channel, ts).clicked += 1


def _message_bounced(state: CustomerState, event: ev.MessageBounced, ts: float, _: Any) -> None:
    _engagement(state, event.message_channel).bounced += 1


def _unsubscribed(state: CustomerState, event: ev.MessageUnsubscribed, ts: float, _: Any) -> None:
    _decide_consent(state, event.message_channel, Consent(False, ts))


def _consent_changed(state: CustomerState, event: ev.ConsentChanged, ts: float, _: Any) -> None:
    _decide_consent(state, event.consent_channel, Consent(event.granted, ts))


def _ticket_opened(state: CustomerState, event: ev.SupportTicketOpened, ts: float, _: Any) -> None:
    if event.ticket_id not in state.open_tickets:
        state.open_tickets.append(event.ticket_id)


def _ticket_closed(state: CustomerState, event: ev.SupportTicketClosed, ts: float, _: Any) -> None:
    if event.ticket_id in state.open_tickets:
        state.open_tickets.remove(event.ticket_id)


def _identify(state: CustomerState, event: ev.Identify, ts: float, _: Any) -> None:
    for key, value in msgspec.structs.asdict(event.traits).items():
        if value is not None and ts >= state.trait_times.get(key, -math.inf):
            state.traits[key] = value
            state.trait_times[key] = ts


def _group(state: CustomerState, event: ev.Group, ts: float, _: Any) -> None:
    """The latest group call names the account; traits of the same account add up
    (a late call only fills the traits the account does not have yet)."""
    account = state.account
    if account is None or (account.id != event.group_id and ts >= account.updated_at):
        state.account = Account(id=event.group_id, traits=dict(event.traits), updated_at=ts)
    elif account.id == event.group_id:
        if ts >= account.updated_at:
            account.traits.update(event.traits)
            account.updated_at = ts
        else:
            for key, value in event.traits.items():
                account.traits.setdefault(key, value)


def _no_update(state: CustomerState, event: ev.BaseEvent, ts: float, _: Any) -> None:
    pass


_PROFILE_UPDATES: dict[type, _Update] = {
    ev.ProductView: _product_view,
    ev.AddToCart: _add_to_cart,
    ev.RemoveFromCart: _remove_from_cart,
    ev.OrderPlaced: _order_placed,
    ev.OrderRefunded: _order_refunded,
    ev.LoyaltyPointsAdjusted: _points_adjusted,
    ev.MessageSent: _message_sent,
    ev.MessageOpened: _message_opened,
    ev.MessageClicked: _message_clicked,
    ev.MessageBounced: _message_bounced,
    ev.MessageUnsubscribed: _unsubscribed,
    ev.ConsentChanged: _consent_changed,
    ev.SupportTicketOpened: _ticket_opened,
    ev.SupportTicketClosed: _ticket_closed,
    ev.Identify: _identify,
    ev.Group: _group,
}


def _update_of(kind: type) -> _Update:
    """The update of an event class not in the table: that of the nearest base
    class in it (a subclass updates as its base would), else none."""
    found = next((_PROFILE_UPDATES[k] for k in kind.__mro__ if k in _PROFILE_UPDATES), _no_update)
    _PROFILE_UPDATES[kind] = found
    return found


def _affinity(state: CustomerState, category: str, weight: float, ts: float) -> None:
    score = state.affinity.get(category)
    if score is None:
        state.affinity[category] = Decayed(weight, ts)
    else:
        score.add(weight, ts)


def _refund(state: CustomerState, record: OrderRecord, amount: float | None) -> None:
    """Refund part or all of a known order, taking back its points in proportion
    (unless they have expired already)."""
    state.tier_review_at = 0.0  # the rolling spend changed
    refundable = record.total - record.refunded
    refund = refundable if amount is None else min(amount, refundable)
    points_before = points_refunded(record)
    record.refunded += refund
    state.revenue -= refund
    if not record.expired:
        taken = points_refunded(record) - points_before
        state.loyalty_points = max(0, state.loyalty_points - taken)


def _expire_points(state: CustomerState, ts: float, expire_s: float) -> None:
    """Points earned more than ``expire_s`` before ``ts`` leave the balance.

    Lazily, at the customer's next event (event time): the same history gives
    the same balance however it is processed. Spent points are not traced to
    the orders that earned them; the balance never goes below zero.
    """
    for order in state.order_history:  # oldest first
        if order.ts + expire_s > ts:
            break
        if order.expired or order.points <= 0:
            continue
        order.expired = True
        remaining = order.points - points_refunded(order)
        state.loyalty_points = max(0, state.loyalty_points - remaining)


def _settle_early_refund(state: CustomerState, record: OrderRecord, amount: float | None) -> None:
    """An order whose refund arrived first: apply it as if in order."""
    if amount is None:
        _refund(state, record, None)
        return
    # The stated amount was already taken from revenue and points; undo that
    # and refund the order properly (which also caps it at the order total).
    state.revenue += amount
    state.loyalty_points += min(
        record.points, int(amount * (record.points / record.total)) if record.total > 0 else 0
    )
    _refund(state, record, amount)


def _remember_pending(state: CustomerState, order_id: str, amount: float | None) -> None:
    pending = state.pending_refunds
    if order_id in pending and amount is not None and pending[order_id] is not None:
        pending[order_id] = (pending[order_id] or 0.0) + amount
    else:
        pending[order_id] = amount
    while len(pending) > MAX_ORDERS_KEPT:
        del pending[next(iter(pending))]


def _decide_consent(state: CustomerState, channel: str, decision: Consent) -> None:
    current = state.consent.get(channel)
    if current is None or decision.supersedes(current):
        state.consent[channel] = decision


def _record_order(state: CustomerState, record: OrderRecord) -> None:
    state.tier_review_at = 0.0  # the rolling spend changed
    history = state.order_history
    pos = len(history)
    while pos > 0 and history[pos - 1].ts > record.ts:
        pos -= 1
    history.insert(pos, record)
    del history[:-MAX_ORDERS_KEPT]


def _engagement(state: CustomerState, channel: str) -> Engagement:
    found = state.engagement.get(channel)
    if found is None:
        found = state.engagement[channel] = Engagement()
    return found


def _engaged(state: CustomerState, channel: str, ts: float) -> Engagement:
    found = _engagement(state, channel)
    found.last_at = max(found.last_at, ts)
    return found


@lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _count_hour(state: CustomerState, ts: float) -> None:
    """Activity by hour of day in the customer's own time zone (UTC if unknown)."""
    name = state.traits.get("timezone")
    hour = local_hour(ts, UTC if name is None else _zone(name))
    hours = state.active_hours
    if not hours:
        hours = state.active_hours = [0] * 24
    hours[hour] += 1


# Per time zone, a span of event time throughout which the local hour is known:
# (from, until, hour). Most events fall in the span of the one before.
_HOUR_SPANS: dict[tzinfo, tuple[float, float, int]] = {}
_ONE_HOUR = timedelta(hours=1)


def local_hour(ts: float, zone: tzinfo) -> int:
    """``datetime.fromtimestamp(ts, zone).hour``, for most events without a datetime.

    A span is the UTC hour around ``ts`` less a second at either end, so that
    the rounding of ``ts`` to whole microseconds cannot take it out of the
    hour. It is kept only where the zone's offset is a whole number of hours
    and the same at both ends of the hour (no change of the clocks within it):
    the local hour is then the same throughout.
    """
    span = _HOUR_SPANS.get(zone)
    if span is not None and span[0] <= ts < span[1]:
        return span[2]
    hour = datetime.fromtimestamp(ts, tz=zone).hour
    start = ts // 3600.0 * 3600.0
    first = datetime.fromtimestamp(start, tz=zone)
    last = datetime.fromtimestamp(start + 3599.0, tz=zone)
    offset = first.utcoffset()
    if (
        offset is not None
        and offset == last.utcoffset()
        and offset % _ONE_HOUR == timedelta(0)
        and first.hour == last.hour
    ):
        if len(_HOUR_SPANS) >= 1024:
            _HOUR_SPANS.clear()
        _HOUR_SPANS[zone] = (start + 1.0, start + 3599.0, first.hour)
    return hour


def _remember_view(state: CustomerState, sku: str, ts: float) -> None:
    """Keep the latest view time per SKU, most recent first by event time."""
    viewed = state.recently_viewed
    views = 1
    for i, v in enumerate(viewed):
        if v.sku == sku:
            if v.ts >= ts:
                v.views += 1
                return
            views = v.views + 1
            del viewed[i]
            break
    pos = 0
    while pos < len(viewed) and viewed[pos].ts > ts:
        pos += 1
    viewed.insert(pos, Viewed(sku, ts, views))
    del viewed[RECENT_ITEMS:]
