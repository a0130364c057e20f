"""Item popularity with exponential time decay: the recommendations fallback.

Scores are kept in log space relative to a fixed epoch,
``score = log(sum_i w_i * exp(t_i / tau))``, so ranking by the stored score is
ranking by decayed popularity at any reference time, and each update is an
absolute value (a replayed write overwrites, never adds).
"""

from __future__ import annotations

import math

import msgspec

from engine import events as ev

DECAY_TAU_S = 7 * 24 * 3600.0  # one week
_WEIGHTS = {"product_view": 1.0, "add_to_cart": 3.0, "order_placed": 5.0}
_VIEW, _CART, _ORDER = _WEIGHTS["product_view"], _WEIGHTS["add_to_cart"], _WEIGHTS["order_placed"]


class ItemSignal(msgspec.Struct, frozen=True, array_like=True):
    sku: str
    weight: float
    ts: float
    name: str | None
    category: str | None
    price: float | None


class ItemState(msgspec.Struct, kw_only=True):
    sku: str
    log_score: float = -math.inf
    name: str | None = None
    category: str | None = None
    price: float | None = None


def item_signals(event: ev.BaseEvent, ts: float | None = None) -> list[ItemSignal]:
    """What one event says about item interest (``ts``: the event's time, if known)."""
    at = event.ts if ts is None else ts
    # isinstance and attributes: a match with keyword patterns costs twice as much.
    if isinstance(event, ev.ProductView):
        return [ItemSignal(event.sku, _VIEW, at, event.name, event.category, event.price)]
    if isinstance(event, ev.AddToCart):
        return [ItemSignal(event.sku, _CART, at, event.name, event.category, event.price)]
    if isinstance(event, ev.OrderPlaced):
        return [
            ItemSignal(i.sku, _ORDER * i.quantity, at, i.name, i.category, i.price)
            for i in event.items
        ]
    return []


def apply_signal(state: ItemState | None, signal: ItemSignal) -> ItemState:
    if state is None:
        state = ItemState(sku=signal.sku)
    term = math.log(signal.weight) + signal.ts / DECAY_TAU_S
    state.log_score = _logaddexp(state.log_score, term)
    state.name = signal.name or state.name
    state.category = signal.category or state.category
    state.price = signal.price if signal.price is not None else state.price
    return state


def log_term(weight: float, ts: float, tau: float = DECAY_TAU_S) -> float:
    """One weighted occurrence at ``ts`` in the log-space scale of this module,
    for other decayed scores (engine/recs) that keep the same absolute form."""
    return math.log(weight) + ts / tau


def logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow; ``-inf`` is the empty score."""
    if a == -math.inf:
        return b
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


_logaddexp = logaddexp
