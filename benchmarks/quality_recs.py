"""The recommender's part of ``benchmarks.quality``: HR@k and NDCG@k against the next order.

At each order of the replay, before the order is learnt, every method ranks
``k`` items for its customer (context ``home``); the truth is the set of
products in that order. Methods:

- ``pulse``: engine/recs (relations, trending, the ranker with the default
  policy), read through the same serving views the API would read;
- ``popularity``: engine.popularity's decayed score (a week), what Pulse
  served before, the same list for everyone (an order line weighs five times
  its quantity);
- ``popularity_lines``: the recommender's own popular list (trending.py), the
  same decay with an order line counting once whatever its quantity: a
  stronger baseline on wholesale data, where bulk lines swamp the other;
- ``funk_mf``: River's ``reco.FunkMF`` alone, learning each order line as a
  1 and ``negatives`` random known items as 0s (implicit feedback), ranking
  every item it knows by its predicted score.

Three groups of cases: orders of returning customers (an earlier order in the
data: the headline), the same with only items new to the customer counted
and already-bought items filtered out by every method (what relations add
beyond reorders), and first orders (cold start).
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import numpy as np
import orjson
from river import optim, reco

from benchmarks.prequential import Step
from engine import events as ev
from engine.decode import decode_event
from engine.popularity import ItemState, apply_signal, item_signals
from engine.profile import CustomerState
from engine.recs import ranker
from engine.recs.config import DEFAULT_CONFIG, RecsConfig
from engine.recs.relations import ItemRelations, Similar, apply_pair, similar_items
from engine.recs.shopper import ShopperItems, remember
from engine.recs.trending import Board, ItemTrend, apply_trend
from pulse.sample_stream import shopper_events

GROUPS = ("returning", "returning_new_items", "first_order")
PERIOD_GROUPS = (
    "returning_before",
    "returning_after",
    "returning_new_items_before",
    "returning_new_items_after",
)


@dataclass
class Metrics:
    """Hit rate and NDCG at k, binary relevance, over the cases seen."""

    k: int
    cases: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0

    def add(self, ranked: Sequence[str], truth: set[str]) -> None:
        top = ranked[: self.k]
        dcg = sum(1.0 / math.log2(i + 2) for i, sku in enumerate(top) if sku in truth)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(truth), self.k)))
        self.cases += 1
        self.hits += dcg > 0.0
        self.ndcg_sum += dcg / ideal if ideal else 0.0

    @property
    def hr(self) -> float:
        return self.hits / self.cases if self.cases else float("nan")

    @property
    def ndcg(self) -> float:
        return self.ndcg_sum / self.cases if self.cases else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {"cases": self.cases, f"hr@{self.k}": self.hr, f"ndcg@{self.k}": self.ndcg}


class Method(Protocol):
    name: str

    def rank(
        self,
        customer: str,
        state: CustomerState | None,
        k: int,
        bought: Container[str] | None,
        now: float,
    ) -> list[str]:
        """The k best items at time ``now``; ``bought`` given: leave those out (new
        items only)."""
        ...

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None: ...


# Pulse --------------------------------------------------------------------------


@dataclass
class PulseRecs:
    """engine/recs as the dataflow and the API would run it, in one process."""

    config: RecsConfig = DEFAULT_CONFIG
    policy: ranker.Policy = ranker.DEFAULT_POLICY
    name: str = "pulse"
    shoppers: dict[str, ShopperItems] = field(default_factory=dict)
    relations: dict[str, ItemRelations] = field(default_factory=dict)
    trends: dict[str, ItemTrend] = field(default_factory=dict)
    board: Board = field(default_factory=Board)
    # Serving views of items whose relations changed since they were last
    # read: what the dataflow rewrites in Redis once per batch.
    views: dict[str, list[Similar]] = field(default_factory=dict)
    learn_ns: dict[str, int] = field(default_factory=dict)
    learn_events: dict[str, int] = field(default_factory=dict)
    pair_signals: int = 0
    pairs: int = 0
    recommend_ns: int = 0  # in ranker.recommend alone: the API's work once it has read Redis
    recommend_calls: int = 0

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None:
        spent = self.update(event)
        kind = ev.event_type(event)
        self.learn_ns[kind] = self.learn_ns.get(kind, 0) + spent
        self.learn_events[kind] = self.learn_events.get(kind, 0) + 1

    def update(self, event: ev.BaseEvent) -> int:
        """Everything one event changes: the customer's items, the items' relations,
        their popularity. Returns the nanoseconds the engine's part took (what a
        dataflow does per event), leaving out the in-process stand-ins for Redis
        (the lists and the serving views)."""
        clock = time.perf_counter_ns
        started = clock()
        config = self.config
        key = event.customer_key
        items = self.shoppers.get(key)
        if items is None:
            items = self.shoppers[key] = ShopperItems()
        ts = event.ts
        signals = remember(items, event, config, ts)
        relations = self.relations
        for pair in signals:
            relations[pair.sku] = apply_pair(relations.get(pair.sku), pair, config)
        trends = self.trends
        changed = []
        for signal in item_signals(event, ts):
            trend = trends[signal.sku] = apply_trend(trends.get(signal.sku), signal, config)
            changed.append(trend)
        spent = clock() - started
        self.pair_signals += len(signals)
        self.pairs += sum(len(s.others) for s in signals)
        for pair in signals:
            self.views.pop(pair.sku, None)
        for trend in changed:
            self.board.update(trend, config)
        return spent

    def similar(self, sku: str) -> list[Similar]:
        view = self.views.get(sku)
        if view is None:
            state = self.relations.get(sku)
            view = [] if state is None else similar_items(state, None, self.config)
            self.views[sku] = view
        return view

    def item_popularity(self, items: ShopperItems) -> dict[str, float]:
        """What ``ZMSCORE popular <bought items>`` answers."""
        trends = self.trends
        return {sku: trends[sku].popular for sku in items.bought if sku in trends}

    def sources(
        self, shopper: ranker.Shopper, request: ranker.Request, policy: ranker.Policy
    ) -> ranker.Sources:
        """What the API would read from Redis for this request."""
        anchors = ranker.anchors(shopper, request, policy)
        wanted = ranker.categories_wanted(shopper, request, policy)
        return ranker.Sources(
            similar={sku: self.similar(sku) for sku, _ in anchors},
            popular=self.board.top("popular", policy.popular_items),
            trending=self.board.top("trending", policy.trending_items),
            popular_in={
                c: self.board.top(f"popular:{c}", policy.category_items) for c, _ in wanted
            },
            item_popularity=self.item_popularity(shopper.items),
        )

    def recommend(
        self,
        customer: str,
        state: CustomerState | None,
        request: ranker.Request,
        policy: ranker.Policy,
    ) -> list[ranker.Recommendation]:
        shopper = ranker.shopper_from_state(state, self.shoppers.get(customer))
        sources = self.sources(shopper, request, policy)
        started = time.perf_counter_ns()
        ranked = ranker.recommend(shopper, request, sources, policy, self.config)
        self.recommend_ns += time.perf_counter_ns() - started
        self.recommend_calls += 1
        return ranked

    def rank(
        self,
        customer: str,
        state: CustomerState | None,
        k: int,
        bought: Container[str] | None,
        now: float,
    ) -> list[str]:
        policy = self.policy
        if bought is not None:
            policy = msgspec.structs.replace(policy, repeat_in=frozenset())
        request = ranker.Request(k=k, now=now)
        return [r.sku for r in self.recommend(customer, state, request, policy)]

    def cost(self) -> dict[str, Any]:
        events = sum(self.learn_events.values())
        total = sum(self.learn_ns.values())
        return {
            "us_per_event": total / events / 1e3 if events else float("nan"),
            "pair_signals_per_event": self.pair_signals / events if events else float("nan"),
            "pairs_per_event": self.pairs / events if events else float("nan"),
            "recommend_us": self.recommend_ns / max(1, self.recommend_calls) / 1e3,
            "us_per_event_by_type": {
                kind: self.learn_ns[kind] / n / 1e3 for kind, n in self.learn_events.items()
            },
        }


# Baselines ----------------------------------------------------------------------


@dataclass
class Popularity:
    """engine.popularity alone: every customer gets the same decayed bestsellers."""

    name: str = "popularity"
    items: dict[str, ItemState] = field(default_factory=dict)

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None:
        for signal in item_signals(event):
            self.items[signal.sku] = apply_signal(self.items.get(signal.sku), signal)

    def rank(
        self,
        customer: str,
        state: CustomerState | None,
        k: int,
        bought: Container[str] | None,
        now: float,
    ) -> list[str]:
        ranked = sorted(self.items.values(), key=lambda s: (-s.log_score, s.sku))
        return _first(
            (s.sku for s in ranked), k, bought or (), state.cart if state is not None else {}
        )


@dataclass
class PopularityLines:
    """engine/recs/trending.py's popular list alone: the same decay as
    ``popularity``, but an order line counts once whatever its quantity."""

    name: str = "popularity_lines"
    config: RecsConfig = DEFAULT_CONFIG
    trends: dict[str, ItemTrend] = field(default_factory=dict)
    board: Board = field(default_factory=Board)

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None:
        for signal in item_signals(event):
            trend = apply_trend(self.trends.get(signal.sku), signal, self.config)
            self.trends[signal.sku] = trend
            self.board.update(trend, self.config)

    def rank(
        self,
        customer: str,
        state: CustomerState | None,
        k: int,
        bought: Container[str] | None,
        now: float,
    ) -> list[str]:
        ranked = self.board.top("popular", self.config.board_kept)
        cart = state.cart if state is not None else {}
        return _first((s.sku for s in ranked), k, bought or (), cart)


@dataclass
class FunkMF:
    """River's FunkMF alone, on implicit feedback with sampled negatives.

    The defaults are the best on the first half of the retail data of a small
    grid (factors 16 and 32, learning rate 0.02 to 0.2, L2 0.001 and 0.01, 1,
    4 or 8 negatives; docs/recommendations.md), chosen as Pulse's were.
    """

    n_factors: int = 32
    learning_rate: float = 0.1
    l2: float = 0.01
    negatives: int = 4
    seed: int = 42
    name: str = "funk_mf"
    known: list[str] = field(default_factory=list)
    _known_set: set[str] = field(default_factory=set)
    _model: Any = None
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._model = reco.FunkMF(
            n_factors=self.n_factors,
            optimizer=optim.SGD(self.learning_rate),
            l2=self.l2,
            initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=self.seed),
            seed=self.seed,
        )
        self._rng = random.Random(self.seed)

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None:
        if not isinstance(event, ev.OrderPlaced):
            return
        user = event.customer_key
        basket = {line.sku for line in event.items}
        for sku in sorted(basket):
            if sku not in self._known_set:
                self._known_set.add(sku)
                self.known.append(sku)
        learn = self._model.learn_one
        for sku in sorted(basket):
            learn(user, sku, 1.0)
            for _ in range(self.negatives):
                other = self.known[self._rng.randrange(len(self.known))]
                if other not in basket:
                    learn(user, other, 0.0)

    def rank(
        self,
        customer: str,
        state: CustomerState | None,
        k: int,
        bought: Container[str] | None,
        now: float,
    ) -> list[str]:
        if not self.known:
            return []
        model = self._model
        # The same dot products as predict_one for every known item, at once; a
        # customer it has never seen gets no latent vector created by asking.
        user = model.u_latents.get(customer)
        if user is None:
            return _first(self.known, k, bought or (), {})
        items = np.stack([model.i_latents[sku] for sku in self.known])
        scores = items @ user
        order = np.lexsort((np.arange(len(self.known)), -scores))
        cart = state.cart if state is not None else {}
        return _first((self.known[i] for i in order), k, bought or (), cart)


def _first(skus: Iterable[str], k: int, bought: Container[str], cart: Container[str]) -> list[str]:
    out: list[str] = []
    for sku in skus:
        if sku in bought or sku in cart:
            continue
        out.append(sku)
        if len(out) >= k:
            break
    return out


# The report ---------------------------------------------------------------------


@dataclass
class RecsReport:
    """The ``recs`` evaluator of the prequential replay: every method, every group."""

    methods: list[Method]
    k: int = 10
    # With a split time, the returning customers' figures also per period: the
    # recommender's defaults were chosen on the earlier one, so the later one
    # shows how they hold on orders they were not chosen on.
    split_at: float | None = None
    bought: dict[str, set[str]] = field(default_factory=dict)
    metrics: dict[tuple[str, str], Metrics] = field(default_factory=dict)
    rank_ns: dict[str, int] = field(default_factory=dict)
    rank_calls: dict[str, int] = field(default_factory=dict)

    def test(self, step: Step) -> None:
        event = step.event
        if not isinstance(event, ev.OrderPlaced) or not event.items:
            return
        truth = {line.sku for line in event.items}
        customer = event.customer_key
        before = self.bought.get(customer, set())
        returning = step.orders_before > 0
        new = truth - before
        period = None
        if self.split_at is not None:
            period = "before" if event.ts < self.split_at else "after"
        for method in self.methods:
            ranked = self._rank(method, customer, step.state, None, event.ts)
            group = "returning" if returning else "first_order"
            self._metrics(method.name, group).add(ranked, truth)
            if returning and period:
                self._metrics(method.name, f"returning_{period}").add(ranked, truth)
            if returning and new:
                ranked = self._rank(method, customer, step.state, before, event.ts)
                self._metrics(method.name, "returning_new_items").add(ranked, new)
                if period:
                    self._metrics(method.name, f"returning_new_items_{period}").add(ranked, new)

    def _rank(
        self,
        method: Method,
        customer: str,
        state: CustomerState | None,
        bought: Container[str] | None,
        now: float,
    ) -> list[str]:
        started = time.perf_counter_ns()
        ranked = method.rank(customer, state, self.k, bought, now)
        spent = time.perf_counter_ns() - started
        self.rank_ns[method.name] = self.rank_ns.get(method.name, 0) + spent
        self.rank_calls[method.name] = self.rank_calls.get(method.name, 0) + 1
        return ranked

    def _metrics(self, method: str, group: str) -> Metrics:
        key = (method, group)
        if key not in self.metrics:
            self.metrics[key] = Metrics(self.k)
        return self.metrics[key]

    def learn(self, step: Step) -> None:
        event = step.event
        assert step.state is not None
        for method in self.methods:
            method.learn(event, step.state)
        if isinstance(event, ev.OrderPlaced):
            self.bought.setdefault(event.customer_key, set()).update(i.sku for i in event.items)

    def finish(self, end_ts: float) -> None:
        return None

    def rows(self, groups: Sequence[str] = GROUPS) -> list[list[Any]]:
        """One row per method: HR and NDCG of each group."""
        out: list[list[Any]] = []
        for method in self.methods:
            row: list[Any] = [method.name]
            for group in groups:
                m = self.metrics.get((method.name, group), Metrics(self.k))
                row += [m.hr, m.ndcg]
            out.append(row)
        return out

    def columns(self, groups: Sequence[str] = GROUPS) -> list[str]:
        k = self.k
        out = ["method"]
        for group in groups:
            label = group.removeprefix("returning_").replace("_", " ")
            out += [f"HR@{k} {label}", f"NDCG@{k} {label}"]
        return out

    def cases(self) -> dict[str, int]:
        first = self.methods[0].name
        groups = GROUPS + (PERIOD_GROUPS if self.split_at is not None else ())
        return {g: self.metrics.get((first, g), Metrics(self.k)).cases for g in groups}

    def as_json(self) -> dict[str, Any]:
        methods: dict[str, Any] = {}
        groups_kept = GROUPS + (PERIOD_GROUPS if self.split_at is not None else ())
        for m in self.methods:
            groups = {
                g: self.metrics.get((m.name, g), Metrics(self.k)).as_json() for g in groups_kept
            }
            calls = max(1, self.rank_calls.get(m.name, 0))
            methods[m.name] = groups | {"rank_us": self.rank_ns.get(m.name, 0) / calls / 1e3}
        return {
            "k": self.k,
            "split_at": self.split_at,
            "cases": self.cases(),
            "methods": methods,
        }


# Update cost on a stream with views --------------------------------------------

SYNTHETIC_START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def synthetic_cost(customers: int = 3000, rounds: int = 3) -> dict[str, Any]:
    """The recommender's update cost per event type on the demo's shopper stream
    (views, searches, carts, orders; the retail data has orders only): fresh
    state each round, the fastest round of each event type (noise only adds)."""
    stream: list[ev.BaseEvent] = []
    for raw in shopper_events(
        customers, seed=11, run_id="quality", start=SYNTHETIC_START, spacing_s=2.0
    ):
        event = decode_event(orjson.dumps(raw), 0.0)
        assert isinstance(event, ev.BaseEvent), event
        stream.append(event)
    kinds = [ev.event_type(e) for e in stream]
    best: dict[str, float] = {}
    totals: list[float] = []
    # CPU time of the whole round per event: wall time per call counts the
    # moments another process had the core; this does not (but includes the
    # in-process stand-ins for Redis, which the per-call figures leave out).
    cpu_totals: list[float] = []
    signals = 0
    for _ in range(rounds):
        recs = PulseRecs()
        spent: dict[str, int] = {}
        update = recs.update
        cpu = time.process_time()
        for event, kind in zip(stream, kinds, strict=True):
            spent[kind] = spent.get(kind, 0) + update(event)
        cpu_totals.append((time.process_time() - cpu) / len(stream) * 1e6)
        counts = Counter(kinds)
        for kind, ns in spent.items():
            us = ns / counts[kind] / 1e3
            best[kind] = min(best.get(kind, us), us)
        totals.append(sum(spent.values()) / len(stream) / 1e3)
        signals = recs.pairs
    return {
        "events": len(stream),
        "customers": customers,
        "us_per_event": min(totals),
        "cpu_us_per_event_with_redis_stand_ins": min(cpu_totals),
        "pairs_per_event": signals / len(stream),
        "us_per_event_by_type": best,
        "events_by_type": dict(Counter(kinds)),
    }
