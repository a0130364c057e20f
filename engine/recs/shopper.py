"""What the recommender remembers of one customer, and the item pairs each event gives.

The profile (engine/profile.py) already keeps recent views, the cart and
category affinities, but not which items were bought, nor the category of a
viewed item; the recommender needs both (repeat purchases, the
already-bought filter, the category of an earlier view when it is paired
with a new one). ``ShopperItems`` keeps them, bounded, beside the profile
rather than in it, so the profile's schema and hot path stay as they are.
"""

from __future__ import annotations

import math

import msgspec

from engine import events as ev
from engine.popularity import log_term, logaddexp
from engine.recs.config import DEFAULT_CONFIG, RecsConfig
from engine.recs.relations import BOUGHT_TOGETHER, CO_VIEWED, VIEWED_BOUGHT, PairSignal


class Seen(msgspec.Struct, array_like=True, gc=False):
    sku: str
    ts: float
    category: str | None = None


class Bought(msgspec.Struct, array_like=True, gc=False):
    """One item the customer bought: orders that had it, decayed, and the last time."""

    log_weight: float
    orders: int
    last_ts: float
    category: str | None = None


class ShopperItems(msgspec.Struct, kw_only=True, gc=False):
    viewed: list[Seen] = []  # viewed or added to cart, most recent first, one entry per SKU
    bought: dict[str, Bought] = {}  # at most RecsConfig.bought_kept, the lightest go first


_SEEN = (ev.ProductView, ev.AddToCart)  # events that show interest in one item


def remember(
    items: ShopperItems,
    event: ev.BaseEvent,
    config: RecsConfig = DEFAULT_CONFIG,
    ts: float | None = None,
) -> list[PairSignal]:
    """Update the customer's items with one event; the item pairs it showed.

    A view pairs with the customer's views of the last ``co_view_window_s``
    (both ways: co-viewing is symmetric); an order pairs its items with each
    other and with what was viewed in the week before it (viewed then bought,
    one way). Pairs are bounded per event (``co_view_partners``,
    ``basket_partners``) so a large order costs linear, not quadratic, time.
    ``ts``: the event's time when the caller has it (reading it costs more than
    the rest of an event this ignores).
    """
    if isinstance(event, _SEEN):
        at = event.ts if ts is None else ts
        signals = _co_viewed(items.viewed, event.sku, event.category, at, config)
        _see(items.viewed, event.sku, event.category, at, config.recent_kept)
        return signals
    if isinstance(event, ev.OrderPlaced):
        return _order(items, event.items, event.ts if ts is None else ts, config)
    return []


def _co_viewed(
    viewed: list[Seen], sku: str, category: str | None, ts: float, config: RecsConfig
) -> list[PairSignal]:
    window = config.co_view_window_s
    partners = [s for s in viewed if s.sku != sku and abs(ts - s.ts) <= window]
    partners = partners[: config.co_view_partners]
    if not partners:
        return []
    out = [
        PairSignal(
            sku,
            CO_VIEWED,
            1.0,
            ts,
            tuple(p.sku for p in partners),
            tuple(p.category for p in partners),
        )
    ]
    for p in partners:
        out.append(PairSignal(p.sku, CO_VIEWED, 1.0, ts, (sku,), (category,)))
    return out


def _see(viewed: list[Seen], sku: str, category: str | None, ts: float, kept: int) -> None:
    """Keep the latest time per SKU, most recent first by event time."""
    for i, seen in enumerate(viewed):
        if seen.sku == sku:
            if seen.ts >= ts:
                seen.category = category or seen.category
                return
            category = category or seen.category
            del viewed[i]
            break
    pos = 0
    while pos < len(viewed) and viewed[pos].ts > ts:
        pos += 1
    viewed.insert(pos, Seen(sku, ts, category))
    del viewed[kept:]


def _order(
    items: ShopperItems, lines: tuple[ev.LineItem, ...], ts: float, config: RecsConfig
) -> list[PairSignal]:
    basket: dict[str, str | None] = {}
    for line in lines:
        if line.sku not in basket or basket[line.sku] is None:
            basket[line.sku] = line.category
    skus = list(basket)
    cats = list(basket.values())
    n = len(skus)
    out: list[PairSignal] = []
    if n > 1:
        # One pair counts less in a large basket: a small order says more about
        # what goes together than a bulk one (the usual 1 / log(1 + n)).
        weight = 1.0 / math.log2(1.0 + n)
        partners = min(config.basket_partners, n - 1)
        ring_skus, ring_cats = skus + skus, cats + cats
        for i, a in enumerate(skus):
            # Partners are the next items in the order, wrapping round, so each
            # item gets the same number of them whatever its place.
            others = tuple(ring_skus[i + 1 : i + 1 + partners])
            categories = tuple(ring_cats[i + 1 : i + 1 + partners])
            out.append(PairSignal(a, BOUGHT_TOGETHER, weight, ts, others, categories))
    window = config.view_to_buy_window_s
    led = [s for s in items.viewed if s.sku not in basket and 0.0 <= ts - s.ts <= window]
    if led:
        others, categories = tuple(skus), tuple(cats)
        for seen in led[: config.co_view_partners]:
            out.append(PairSignal(seen.sku, VIEWED_BOUGHT, 1.0, ts, others, categories))
    _buy(items.bought, basket, ts, config)
    return out


def _buy(
    bought: dict[str, Bought], basket: dict[str, str | None], ts: float, config: RecsConfig
) -> None:
    term = log_term(1.0, ts, config.bought_tau_s)
    for sku, category in basket.items():
        known = bought.get(sku)
        if known is None:
            bought[sku] = Bought(term, 1, ts, category)
        else:
            known.log_weight = logaddexp(known.log_weight, term)
            known.orders += 1
            known.last_ts = max(known.last_ts, ts)
            known.category = category or known.category
    _forget_lightest(bought, config.bought_kept)


def _forget_lightest(bought: dict[str, Bought], kept: int) -> None:
    """Down to ``kept`` items, the lightest going first (bought once, long ago).
    Not space-saving here: an item new to this customer must not inherit
    another's history of repeats."""
    excess = len(bought) - kept
    if excess > 0:
        lightest = sorted(bought.items(), key=lambda kv: (kv[1].log_weight, kv[0]))[:excess]
        for sku, _ in lightest:
            del bought[sku]


def merge_items(
    into: ShopperItems, other: ShopperItems, config: RecsConfig = DEFAULT_CONFIG
) -> None:
    """Fold another profile's items of the same person (an anonymous one, an
    aliased id) into ``into``: views by their latest time, purchases added up."""
    for seen in sorted(other.viewed, key=lambda s: s.ts):
        _see(into.viewed, seen.sku, seen.category, seen.ts, config.recent_kept)
    for sku, theirs in other.bought.items():
        mine = into.bought.get(sku)
        if mine is None:
            into.bought[sku] = Bought(
                theirs.log_weight, theirs.orders, theirs.last_ts, theirs.category
            )
        else:
            mine.log_weight = logaddexp(mine.log_weight, theirs.log_weight)
            mine.orders += theirs.orders
            mine.last_ts = max(mine.last_ts, theirs.last_ts)
            mine.category = mine.category or theirs.category
    _forget_lightest(into.bought, config.bought_kept)


_items_encoder = msgspec.msgpack.Encoder()
_items_decoder = msgspec.msgpack.Decoder(ShopperItems)


def encode_items(items: ShopperItems) -> bytes:
    """A customer's items as Redis serves them to the ranking (MessagePack)."""
    return _items_encoder.encode(items)


def decode_items(raw: bytes) -> ShopperItems:
    return _items_decoder.decode(raw)
