"""The personalised ranking: candidates from what the customer did, blended, then filtered.

Candidates and their evidence, each scored in [0, 1] and weighted (``Policy``):

- repeat: items the customer bought, by decayed number of orders (the best
  candidate for consumables and for trade buyers, who reorder);
- viewed: items viewed lately and not bought, the latest first;
- similar: related items (``relations.similar_items``) of anchor items: the
  product on screen, the cart, recent views and habitual purchases;
- category: popular items of the customer's favourite categories (profile
  affinity);
- popular and trending items, the fallback that always fills the list.

Filters come after scoring and are absolute: items in the cart, unavailable
items, the product on screen, category include and exclude, and items
already bought, except where the context allows repeats (``Policy.repeat_in``)
or the item's category is a consumable.

Everything the ranking reads is in ``Shopper`` (the profile plus
``ShopperItems``) and ``Sources`` (serving views read from Redis), so the API
can rank in-process after one or two reads; ``anchors`` and
``categories_wanted`` say which views to read.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping
from typing import Literal

import msgspec

from engine.profile import CustomerState, ProfileView
from engine.recs.config import DEFAULT_CONFIG, RecsConfig
from engine.recs.relations import Similar
from engine.recs.shopper import ShopperItems

ContextKind = Literal["home", "product", "cart"]
MAX_K = 100


class Context(msgspec.Struct, frozen=True):
    kind: ContextKind = "home"
    sku: str | None = None  # the product on screen, for ``product``


HOME = Context()


def parse_context(text: str) -> Context:
    """``home``, ``cart`` or ``product:{sku}``; a ValueError says what is wrong."""
    if text in ("home", "cart"):
        return Context(text)  # type: ignore[arg-type]
    if text.startswith("product:"):
        sku = text.removeprefix("product:")
        if not sku:
            raise ValueError("context product:{sku} needs a SKU after the colon")
        return Context("product", sku)
    raise ValueError(f"context must be home, cart or product:{{sku}}, not {text!r}")


class Request(msgspec.Struct, frozen=True, kw_only=True):
    k: int = 10
    context: Context = HOME
    now: float = 0.0  # epoch seconds; 0: as of the customer's latest purchase
    include: frozenset[str] = frozenset()  # only these categories, when given
    exclude: frozenset[str] = frozenset()  # never these categories


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """How evidence is weighed and which repeats are welcome: the merchant's choices.

    The weights of reorders, similar items and popularity were chosen on the
    first half of the retail data's replay (docs/recommendations.md); those of
    views, categories and trending items, which that data cannot measure (it
    has orders only), by judgement: a view a minute ago is strong evidence.
    """

    repeat_in: frozenset[str] = frozenset({"home"})  # contexts that may show bought items
    consumables: frozenset[str] = frozenset()  # categories that may always be bought again
    anchors: int = 6  # items whose similar items are candidates
    favourite_categories: int = 2
    reorder_candidates: int = 50  # bought items considered for a reorder, strongest habits
    repeat: float = 1.0
    viewed: float = 0.5
    similar: float = 0.1
    category: float = 0.05
    popular: float = 0.3
    trending: float = 0.03
    on_screen: float = 10.0  # the product on screen or the cart, as an anchor
    recency: float = 0.85  # each earlier view counts this much of the next
    # How much of each list to read (ZREVRANGE 0 n-1) and of each anchor's
    # similar items: longer lists cost time per request and, measured, add
    # nothing to the top ten.
    popular_items: int = 30
    trending_items: int = 10
    category_items: int = 10
    similar_items: int = 10


DEFAULT_POLICY = Policy()


class Shopper(msgspec.Struct, kw_only=True):
    items: ShopperItems
    cart: frozenset[str] = frozenset()
    affinity: Mapping[str, float] = {}  # category -> decayed interest
    # Bought items, strongest habit first, as shares of the strongest: worked
    # out once per request (``_habits``), read by anchors and reorders alike.
    habits: list[tuple[str, float]] | None = None


def shopper_from_view(view: ProfileView | None, items: ShopperItems | None) -> Shopper:
    """The API's way in: the profile as Redis serves it."""
    items = items or ShopperItems()
    if view is None:
        return Shopper(items=items)
    cart = frozenset(line.sku for line in view.cart)
    return Shopper(items=items, cart=cart, affinity=view.category_affinity)


def shopper_from_state(state: CustomerState | None, items: ShopperItems | None) -> Shopper:
    """The engine's way in (replays, tests): affinities as of the customer's last event."""
    items = items or ShopperItems()
    if state is None:
        return Shopper(items=items)
    now = state.last_seen
    affinity = {c: d.at_time(now) for c, d in state.affinity.items()}
    return Shopper(items=items, cart=frozenset(state.cart), affinity=affinity)


class Sources(msgspec.Struct, kw_only=True):
    """Serving views the ranking reads: similar items per anchor, popularity lists."""

    similar: Mapping[str, list[Similar]] = {}
    popular: list[Similar] = []
    trending: list[Similar] = []
    popular_in: Mapping[str, list[Similar]] = {}  # per category
    unavailable: Container[str] = frozenset()
    # Popular scores (absolute log scores, as the sorted set holds them) of the
    # customer's bought items: among the items a customer might reorder, the
    # ones many others buy now are the likelier.
    item_popularity: Mapping[str, float] = {}


class Recommendation(msgspec.Struct, frozen=True):
    sku: str
    score: float
    reason: str  # the evidence that weighed most (one of EVIDENCE)
    category: str | None = None


def anchors(
    shopper: Shopper, request: Request, policy: Policy = DEFAULT_POLICY
) -> list[tuple[str, float]]:
    """Items whose similar items are candidates, with their weight, heaviest first."""
    weights: dict[str, float] = {}

    def anchor(sku: str, weight: float) -> None:
        if weight > weights.get(sku, 0.0):
            weights[sku] = weight

    context = request.context
    if context.kind == "product" and context.sku:
        anchor(context.sku, policy.on_screen)
    for sku in shopper.cart:
        anchor(sku, policy.on_screen if context.kind == "cart" else 1.0)
    for i, seen in enumerate(shopper.items.viewed):
        anchor(seen.sku, policy.recency**i)
    for sku, share in _habits(shopper)[: policy.anchors]:
        anchor(sku, share)
    ranked = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[: policy.anchors + (1 if context.kind == "product" else 0)]


def categories_wanted(
    shopper: Shopper, request: Request, policy: Policy = DEFAULT_POLICY
) -> list[tuple[str, float]]:
    """Categories whose popular items are candidates: the customer's favourites (as
    shares of the favourite), and every included one."""
    affinity = shopper.affinity or _bought_categories(shopper.items)
    favourites = sorted(
        ((c, v) for c, v in affinity.items() if v > 0 and c not in request.exclude),
        key=lambda kv: (-kv[1], kv[0]),
    )[: policy.favourite_categories]
    best = favourites[0][1] if favourites else 1.0
    wanted = {c: v / best for c, v in favourites}
    for category in request.include:
        wanted.setdefault(category, 0.5)
    if request.include:
        wanted = {c: v for c, v in wanted.items() if c in request.include}
    return sorted(wanted.items(), key=lambda kv: (-kv[1], kv[0]))


EVIDENCE = ("bought_before", "viewed", "similar", "category", "popular", "trending")


class Candidate:
    """An item that passed the filters, with its evidence per kind (``EVIDENCE``
    order, unweighted) and its category. A plain class: a request builds a
    hundred or more, and a Struct or dataclass costs more per instance."""

    __slots__ = ("category", "evidence")

    def __init__(self, category: str | None) -> None:
        self.category = category
        self.evidence = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def candidates(
    shopper: Shopper,
    request: Request,
    sources: Sources,
    policy: Policy = DEFAULT_POLICY,
    config: RecsConfig = DEFAULT_CONFIG,
) -> dict[str, Candidate]:
    """Every item some evidence points at, minus what the filters leave out.

    An item's category is the first one any source knows; with an include
    filter, an item of unknown category is left out (nothing shows it belongs).
    """
    pool = _Pool(_Filter(shopper, request, sources, policy))
    items = shopper.items
    bought = items.bought
    repeats = _repeat_shares(shopper, sources, request.now, policy, config)
    pool.add_ranked(0, [Similar(sku, share, bought[sku].category) for sku, share in repeats])
    recency = policy.recency
    viewed = [s for s in items.viewed if s.sku not in bought]
    pool.add_ranked(1, [Similar(s.sku, recency**i, s.category) for i, s in enumerate(viewed)])
    similar = sources.similar
    per_anchor = policy.similar_items
    for sku, weight in anchors(shopper, request, policy):
        pool.add_ranked(2, similar.get(sku, ())[:per_anchor], weight)
    # Lists are cut to the policy's lengths whatever was read, so the ranking
    # measured is the ranking served.
    per_category = policy.category_items
    for category, share in categories_wanted(shopper, request, policy):
        pool.add_ranked(3, sources.popular_in.get(category, ())[:per_category], share, category)
    pool.add_ranked(4, sources.popular[: policy.popular_items])
    pool.add_ranked(5, sources.trending[: policy.trending_items])
    out = pool.found

    include, exclude = request.include, request.exclude
    if include or exclude:
        for sku in list(out):
            known = out[sku].category
            if known in exclude or (include and known not in include):
                del out[sku]
    return out


def recommend(
    shopper: Shopper,
    request: Request,
    sources: Sources,
    policy: Policy = DEFAULT_POLICY,
    config: RecsConfig = DEFAULT_CONFIG,
) -> list[Recommendation]:
    """The ``request.k`` best items for this shopper in this context, best first:
    each candidate's evidence weighed by the policy and summed; its reason is
    the evidence that weighed most."""
    weights = (
        policy.repeat, policy.viewed, policy.similar, policy.category, policy.popular,
        policy.trending,
    )  # fmt: skip
    w0, w1, w2, w3, w4, w5 = weights
    found = candidates(shopper, request, sources, policy, config)
    scored: list[tuple[float, str]] = []
    for sku, candidate in found.items():
        e = candidate.evidence
        total = w0 * e[0] + w1 * e[1] + w2 * e[2] + w3 * e[3] + w4 * e[4] + w5 * e[5]
        if total > 0.0:
            scored.append((-total, sku))
    k = max(0, min(request.k, MAX_K))
    scored.sort()
    out = []
    for negative, sku in scored[:k]:
        candidate = found[sku]
        parts = [w * e for w, e in zip(weights, candidate.evidence, strict=True)]
        reason = EVIDENCE[parts.index(max(parts))]
        out.append(Recommendation(sku, round(-negative, 6), reason, candidate.category))
    return out


class _Pool:
    """The candidates found so far; evidence added a list at a time (a call per
    entry would be a good part of a request's cost)."""

    __slots__ = ("admissible", "found", "refused")

    def __init__(self, admissible: _Filter) -> None:
        self.admissible = admissible
        self.found: dict[str, Candidate] = {}
        self.refused: set[str] = set()

    def add_ranked(
        self,
        kind: int,
        entries: Iterable[Similar],
        factor: float = 1.0,
        category: str | None = None,
    ) -> None:
        """A list of ranked items, each worth ``factor`` times its score; ``category``
        given: the list's own (a category's popular items). Every candidate comes
        through this loop: no call nor tuple per entry."""
        found, refused, admissible = self.found, self.refused, self.admissible
        for entry in entries:
            sku = entry.sku
            value = factor * entry.score
            candidate = found.get(sku)
            if candidate is None:
                if value <= 0.0 or sku in refused:
                    continue
                if not admissible(sku):
                    refused.add(sku)
                    continue
                candidate = found[sku] = Candidate(category or entry.category)
            elif candidate.category is None:
                candidate.category = category or entry.category
            candidate.evidence[kind] += value


class _Filter:
    """``admissible(sku)``: not in the cart, available, not the product on screen,
    and not bought unless the context or the item's category allows repeats."""

    __slots__ = ("_bought", "_cart", "_consumables", "_on_screen", "_repeats", "_unavailable")

    def __init__(
        self, shopper: Shopper, request: Request, sources: Sources, policy: Policy
    ) -> None:
        context = request.context
        self._cart = shopper.cart
        self._bought = shopper.items.bought
        self._unavailable = sources.unavailable
        self._on_screen = context.sku if context.kind == "product" else None
        self._repeats = context.kind in policy.repeat_in
        self._consumables = policy.consumables

    def __call__(self, sku: str) -> bool:
        if sku in self._cart or sku in self._unavailable or sku == self._on_screen:
            return False
        if self._repeats:
            return True
        bought = self._bought.get(sku)
        return bought is None or bought.category in self._consumables


def _habits(shopper: Shopper) -> list[tuple[str, float]]:
    """Bought items, heaviest habit first, as shares of the heaviest."""
    if shopper.habits is None:
        bought = shopper.items.bought
        ranked = sorted(bought.items(), key=lambda kv: (-kv[1].log_weight, kv[0]))
        high = ranked[0][1].log_weight if ranked else 0.0
        shopper.habits = [(sku, math.exp(b.log_weight - high)) for sku, b in ranked]
    return shopper.habits


def _repeat_shares(
    shopper: Shopper, sources: Sources, now: float, policy: Policy, config: RecsConfig
) -> list[tuple[str, float]]:
    """Bought items as reorder candidates, best first, as shares of the best.

    A habit (decayed number of orders with the item) times ``log(2 + n)``,
    ``n`` the item's popular score in order lines: on the retail data
    (docs/recommendations.md) the popularity factor picks the right reorders
    more often than the habit alone. Only the ``reorder_candidates`` strongest
    habits are looked at: a customer may have hundreds.
    """
    shares = _habits(shopper)[: policy.reorder_candidates]
    popularity = sources.item_popularity
    if not shares or not popularity:
        return shares
    if not now:
        now = max(b.last_ts for b in shopper.items.bought.values())
    offset = now / config.popular_tau_s
    unit = config.max_signal_weight
    log, exp = math.log, math.exp
    scored = []
    for sku, habit in shares:
        score = popularity.get(sku)
        lines = exp(min(score - offset, 700.0)) / unit if score is not None else 0.0
        scored.append((sku, habit * log(2.0 + lines)))
    scored.sort(key=lambda kv: (-kv[1], kv[0]))
    best = scored[0][1]
    return [(sku, value / best) for sku, value in scored]


def _bought_categories(items: ShopperItems) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, b in items.bought.items():
        if b.category:
            out[b.category] = out.get(b.category, 0.0) + b.orders
    return out
