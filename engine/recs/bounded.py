"""Time-decayed weights in a map of fixed capacity: space-saving in log space.

A weight is kept as ``log(sum_i w_i * exp(t_i / tau))``, the form of
``engine.popularity``: an absolute value that ranks by decayed weight at any
reference time, so entries updated at different times stay comparable and an
old entry sinks without ever being touched.

A full map makes room by evicting its lightest entries, and a key that comes
(back) afterwards starts from the heaviest weight evicted so far, the
``floor``, rather than from nothing: the space-saving algorithm (Metwally et
al., "Efficient computation of frequent and top-k elements in data streams",
2005), with evictions batched (a quarter of the map at once, so the cost of
finding the lightest is paid once per many insertions, not per insertion).
So no weight is ever under-counted, a key that keeps coming back climbs in
even when the map churns, and over-counting is bounded by the floor, which
decays like any old weight.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable

import msgspec

from engine.popularity import logaddexp


class DecayedTop(msgspec.Struct, gc=False):
    """Keys with decayed weights, at most ``capacity`` of them (given per call, so a
    snapshot does not carry it)."""

    weights: dict[str, float] = {}
    floor: float = -math.inf  # the heaviest weight evicted so far

    def add(self, key: str, term: float, capacity: int) -> None:
        """Add one log-space term (``popularity.log_term``) to ``key``'s weight."""
        weights = self.weights
        old = weights.get(key)
        if old is None:
            weights[key] = logaddexp(self.floor, term)
            if len(weights) > capacity:
                self._evict(capacity)
        else:
            weights[key] = logaddexp(old, term)

    def add_all(self, keys: Iterable[str], term: float, capacity: int) -> None:
        """The same term for several keys: one item's partners in one event."""
        weights = self.weights
        floor = self.floor
        for key in keys:
            old = weights.get(key)
            # logaddexp, inlined: this is the loop an order's items go through.
            base = floor if old is None else old
            if base == -math.inf:
                weights[key] = term
            elif base > term:
                weights[key] = base + math.log1p(math.exp(term - base))
            else:
                weights[key] = term + math.log1p(math.exp(base - term))
        if len(weights) > capacity:
            self._evict(capacity)

    def _evict(self, capacity: int) -> None:
        self.weights, evicted = keep_heaviest(self.weights, capacity - capacity // 4)
        if evicted > self.floor:
            self.floor = evicted

    def top(self, k: int, exclude: Container[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` heaviest, heaviest first (key order on ties), minus ``exclude``."""
        return top(self.weights, k, exclude)


def top(weights: dict[str, float], k: int, exclude: Container[str] = ()) -> list[tuple[str, float]]:
    """The ``k`` heaviest entries of a map of log weights, heaviest first (key
    order on ties), minus ``exclude``."""
    if k <= 0:
        return []
    ranked = sorted(weights.items(), key=_heaviest_first)
    out: list[tuple[str, float]] = []
    for key, weight in ranked:
        if key in exclude:
            continue
        out.append((key, weight))
        if len(out) >= k:
            break
    return out


def _heaviest_first(entry: tuple[str, float]) -> tuple[float, str]:
    return (-entry[1], entry[0])


def keep_heaviest(weights: dict[str, float], keep: int) -> tuple[dict[str, float], float]:
    """The ``keep`` heaviest entries, and the heaviest weight left out (``-inf`` if
    none). Among entries weighing exactly the cut, the earlier in the map stay:
    deterministic, as a map decoded from a snapshot keeps its order.

    Sorting the bare floats and cutting at a threshold is several times faster
    than sorting the entries with a key function, and this runs on every
    eviction.
    """
    if len(weights) <= keep:
        return weights, -math.inf
    if keep <= 0:
        return {}, max(weights.values())
    values = sorted(weights.values(), reverse=True)
    cut = values[keep - 1]
    room = keep - values.index(cut)  # how many of the entries at the cut stay
    kept: dict[str, float] = {}
    for key, weight in weights.items():
        if weight > cut:
            kept[key] = weight
        elif weight == cut and room > 0:
            kept[key] = weight
            room -= 1
    return kept, values[keep]


def relative(entries: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Log weights as linear shares of the heaviest (1.0 for it), order kept.

    The absolute log weights grow with time; a serving view or a blend needs
    values that say how much one entry weighs against the others.
    """
    entries = list(entries)
    if not entries:
        return []
    high = max(w for _, w in entries)
    return [(key, math.exp(w - high)) for key, w in entries]
