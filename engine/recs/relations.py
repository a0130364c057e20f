"""Item-to-item relations learned from the stream, one bounded state per item.

Three kinds, because they answer different questions: co-viewed items are
alternatives (shown on a product page), items viewed then bought show what a
browse ends in, and items bought together are complements (shown with a
cart). Each kind is a bounded map of time-decayed weights (``bounded``), so an
item's memory stays fixed however many items it ever met, and old relations
fade as the catalogue and tastes move.

The customer's side of the stream knows which items go together
(``shopper.remember`` gives ``PairSignal`` values); each signal then updates
the state of its subject item, which in a dataflow lives on the item's
worker, like item popularity.
"""

from __future__ import annotations

from typing import Final

import msgspec

from engine.popularity import log_term
from engine.recs import bounded
from engine.recs.bounded import DecayedTop
from engine.recs.config import DEFAULT_CONFIG, RecsConfig

Kind = int
CO_VIEWED: Final = 0
VIEWED_BOUGHT: Final = 1
BOUGHT_TOGETHER: Final = 2
KIND_NAMES: Final = ("co_viewed", "viewed_bought", "bought_together")

# How much each kind counts in an item's similar items. A purchase says more
# than a view: views are many and often aimless.
KIND_WEIGHTS: Final = (0.5, 1.0, 1.0)


class PairSignal(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """``others`` went with ``sku`` (of this kind, each this much, at ``ts``).

    One signal per subject item and event, not per pair: an order of twenty
    items is twenty signals, each applied in one pass over its partners.
    """

    sku: str
    kind: Kind
    weight: float
    ts: float
    others: tuple[str, ...]
    categories: tuple[str | None, ...]  # of each of ``others``, when known


class Similar(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One related or ranked item in a serving view; ``score`` in (0, 1], 1 for the best."""

    sku: str
    score: float
    category: str | None = None


class ItemRelations(msgspec.Struct, kw_only=True, gc=False):
    """One item's related items: log-space decayed weights per kind, bounded."""

    sku: str
    co_viewed: DecayedTop = msgspec.field(default_factory=DecayedTop)
    viewed_bought: DecayedTop = msgspec.field(default_factory=DecayedTop)
    bought_together: DecayedTop = msgspec.field(default_factory=DecayedTop)
    categories: dict[str, str] = {}  # category of related items, when known

    def kind(self, kind: Kind) -> DecayedTop:
        if kind == BOUGHT_TOGETHER:
            return self.bought_together
        if kind == VIEWED_BOUGHT:
            return self.viewed_bought
        return self.co_viewed


def apply_pair(
    state: ItemRelations | None, signal: PairSignal, config: RecsConfig = DEFAULT_CONFIG
) -> ItemRelations:
    """The subject item's relations after one signal (created on the first)."""
    if state is None:
        state = ItemRelations(sku=signal.sku)
    kept = config.neighbours_kept
    term = log_term(signal.weight, signal.ts, config.relation_tau_s)
    state.kind(signal.kind).add_all(signal.others, term, kept)
    categories = state.categories
    for other, category in zip(signal.others, signal.categories, strict=True):
        if category:
            categories[other] = category
    if len(categories) > 4 * kept:
        # Forget the categories of items evicted from every kind.
        alive = (
            state.co_viewed.weights.keys()
            | state.viewed_bought.weights.keys()
            | state.bought_together.weights.keys()
        )
        state.categories = {k: v for k, v in categories.items() if k in alive}
    return state


def similar_items(
    state: ItemRelations, k: int | None = None, config: RecsConfig = DEFAULT_CONFIG
) -> list[Similar]:
    """The item's serving view: related items of all kinds blended, best first.

    Each kind's entries count as shares of that kind's strongest (views far
    outnumber orders, so raw weights would let views drown purchases), times
    the kind's weight. Deterministic: ties go by SKU.
    """
    size = config.neighbours_served if k is None else k
    blended: dict[str, float] = {}
    for kind, weight in enumerate(KIND_WEIGHTS):
        entries = state.kind(kind)
        if not entries.weights:
            continue
        for sku, share in bounded.relative(entries.top(size, (state.sku,))):
            blended[sku] = blended.get(sku, 0.0) + weight * share
    if not blended:
        return []
    best = max(blended.values())
    categories = state.categories
    ranked = sorted(blended.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    return [Similar(sku, score / best, categories.get(sku)) for sku, score in ranked]


_similar_encoder = msgspec.msgpack.Encoder()
_similar_decoder = msgspec.msgpack.Decoder(list[Similar])


def encode_similar(items: list[Similar]) -> bytes:
    """An item's similar items as Redis holds them (MessagePack, one value per item)."""
    return _similar_encoder.encode(items)


def decode_similar(raw: bytes) -> list[Similar]:
    return _similar_decoder.decode(raw)
