"""Popular and trending items, overall and per category: the cold-start fallback.

Both are ``engine.popularity``'s decayed score with two horizons: popular over
``popular_tau_s`` (a week), trending over ``trending_tau_s`` (a day). Each item
keeps its own absolute scores (``ItemTrend``, per item on the item's worker,
from the same ``ItemSignal`` values as item popularity); a list is then the
items ordered by score, which is what a Redis sorted set per list holds
(``ZADD`` of the absolute score, trimmed to ``board_kept``). ``Board`` is that
set of lists in process, for the quality benchmark and tests.
"""

from __future__ import annotations

import msgspec

from engine.popularity import ItemSignal, log_term, logaddexp
from engine.recs import bounded
from engine.recs.config import DEFAULT_CONFIG, RecsConfig
from engine.recs.relations import Similar

POPULAR = "popular"
TRENDING = "trending"


class ItemTrend(msgspec.Struct, kw_only=True, gc=False):
    sku: str
    popular: float = -float("inf")
    trending: float = -float("inf")
    category: str | None = None


def apply_trend(
    state: ItemTrend | None, signal: ItemSignal, config: RecsConfig = DEFAULT_CONFIG
) -> ItemTrend:
    if state is None:
        state = ItemTrend(sku=signal.sku)
    weight, ts = min(signal.weight, config.max_signal_weight), signal.ts
    state.popular = logaddexp(state.popular, log_term(weight, ts, config.popular_tau_s))
    state.trending = logaddexp(state.trending, log_term(weight, ts, config.trending_tau_s))
    state.category = signal.category or state.category
    return state


def list_names(category: str | None) -> tuple[str, ...]:
    """The lists an item's scores go to: both horizons overall, and per its category."""
    if not category:
        return (POPULAR, TRENDING)
    return (POPULAR, TRENDING, f"{POPULAR}:{category}", f"{TRENDING}:{category}")


class Board(msgspec.Struct, kw_only=True, gc=False):
    """Every list, as the sorted sets would hold them: list name -> sku -> log score."""

    lists: dict[str, dict[str, float]] = {}
    categories: dict[str, str] = {}  # of the items on any list

    def update(self, trend: ItemTrend, config: RecsConfig = DEFAULT_CONFIG) -> None:
        """Write one item's scores (absolute: the same update twice changes nothing)."""
        sku = trend.sku
        if trend.category:
            self.categories[sku] = trend.category
        for name in list_names(trend.category):
            scores = self.lists.setdefault(name, {})
            scores[sku] = trend.trending if name.startswith(TRENDING) else trend.popular
            if len(scores) > config.board_kept:
                # Trim as ZREMRANGEBYRANK would, but only now and then: a quarter
                # at a time keeps the cost per update small.
                kept, _ = bounded.keep_heaviest(scores, config.board_kept * 3 // 4)
                self.lists[name] = kept

    def top(self, name: str, k: int) -> list[Similar]:
        """The ``k`` best of a list, scores as shares of the best (what the API serves)."""
        scores = self.lists.get(name)
        if not scores:
            return []
        ranked = bounded.relative(bounded.top(scores, k))
        categories = self.categories
        return [Similar(sku, share, categories.get(sku)) for sku, share in ranked]
