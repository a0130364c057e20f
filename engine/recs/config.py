"""The recommender's time constants and memory bounds, in one frozen value."""

from __future__ import annotations

import msgspec

DAY_S = 86400.0


class RecsConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Defaults suit a shop with weekly to monthly buying cycles; the quality
    benchmark (docs/recommendations.md) measures them on real orders.

    Memory per item is at most three relation maps of ``neighbours_kept``
    entries, and per customer ``recent_kept`` seen items and ``bought_kept``
    bought ones, whatever the length of the stream.
    """

    # Item-to-item relations.
    relation_tau_s: float = 60 * DAY_S  # a relation's weight falls by e in two months
    neighbours_kept: int = 50  # entries per relation map of one item (space-saving)
    neighbours_served: int = 20  # similar items in an item's serving view
    co_view_window_s: float = 3600.0  # views this close together are co-viewed
    co_view_partners: int = 5  # earlier views paired with each new view
    view_to_buy_window_s: float = 7 * DAY_S  # a view this long before an order led to it
    basket_partners: int = 5  # items of one order each item is paired with
    # Per customer.
    recent_kept: int = 20
    bought_kept: int = 200
    bought_tau_s: float = 180 * DAY_S  # how long a purchase keeps counting as a habit
    # Popular and trending items.
    popular_tau_s: float = 7 * DAY_S  # the same horizon as engine.popularity
    trending_tau_s: float = 1 * DAY_S
    board_kept: int = 500  # items per popularity list (overall and each category)
    # A signal counts at most this much (an order line's weight): bulk orders of
    # cheap items would otherwise swamp the lists.
    max_signal_weight: float = 5.0


DEFAULT_CONFIG = RecsConfig()
