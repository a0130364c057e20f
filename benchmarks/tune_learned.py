"""Learned rankers over Pulse's own candidates, tried on the earlier part of the data.

Each variant ranks the candidates the engine already generates
(``ranker.candidates``: reorders, similar items, category and popular items)
by a River model of per-(customer, candidate) features, learnt online: at each
order the variant first ranks, then, once the order is known, learns every
candidate it had: a positive if it is in the order, a negative otherwise. A
variant's score is ``blend * hand + model_weight * model``, ``hand`` being the
engine's own weighted sum of evidence (``ranker.recommend``) and ``model`` the
model's logit (logistic, forest) or its prediction (linear regression).

Features (``features``): the hand score and its evidence; the candidate's
current popularity (order lines a week, decayed) and, over every customer so
far, how many bought it and the share of them who bought it again; for the
customer's own items, whether it is one, the orders that had it, that as a
share of the customer's orders, days since it was last bought, whether it was
in the last order; with ``full`` also the days since the customer's last order
over their usual interval and the item's own "due" ratio.

Like ``benchmarks.tune_recs``, only the events before ``--split-at`` are read
unless ``--after`` is given, which replays everything and adds the figures
of the held-out period: run it only for a variant already chosen on the
earlier one (docs/recommendations.md lists which was, and what it gave).

    python -m benchmarks.tune_learned --split-at 2011-06-01          # about 2 minutes
    python -m benchmarks.tune_learned --split-at 2011-06-01 --variants pairwise,forest
    python -m benchmarks.tune_learned --split-at 2011-06-01 --after --variants chosen
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, Literal

from river import compose, forest, linear_model, optim, preprocessing

from benchmarks import quality_recs
from benchmarks.common import day, print_table, write_json
from benchmarks.prequential import replay
from benchmarks.tune_recs import retail_stream
from engine import events as ev
from engine.profile import CustomerState
from engine.recs import ranker

DAY_S = 86400.0
Kind = Literal["logistic", "pairwise", "bayes", "forest"]
Features = dict[str, float]


@dataclass
class Learned(quality_recs.PulseRecs):
    """Pulse's candidates, ranked by the hand score blended with a River model."""

    kind: Kind = "logistic"
    blend: float = 1.0  # weight of the hand score (0: the model alone)
    model_weight: float = 1.0
    learning_rate: float = 0.05  # of the SGD models
    full: bool = True  # also the customer's timing features
    pairs: int = 10  # pairwise: positives and negatives per order, the highest ranked
    model: Any = None
    trained: int = 0
    # The candidates of each customer's last ranking, best first, with their
    # features: learnt when the order they were ranked for comes.
    shown: dict[str, tuple[float, list[tuple[str, Features]]]] = field(default_factory=dict)
    item_buyers: dict[str, int] = field(default_factory=dict)
    item_repeaters: dict[str, int] = field(default_factory=dict)
    # Where the first product of each returning customer's order stood in the
    # ranking of every candidate (-1: not a candidate).
    first_truth: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind == "bayes":
            # Online Bayesian ridge regression: the same fit whatever the order
            # of its examples, no learning rate.
            self.model = linear_model.BayesianLinearRegression(alpha=1.0, beta=1.0)
        elif self.kind == "forest":
            self.model = forest.AMFClassifier(n_estimators=5, use_aggregation=True, seed=1)
        else:
            self.model = compose.Pipeline(
                preprocessing.StandardScaler(),
                linear_model.LogisticRegression(optimizer=optim.SGD(self.learning_rate)),
            )

    def features(
        self, customer: str, state: CustomerState | None, now: float
    ) -> list[tuple[str, Features, float]]:
        """Every candidate the engine would rank, its features and its hand score."""
        policy = self.policy
        request = ranker.Request(k=10, now=now)
        shopper = ranker.shopper_from_state(state, self.shoppers.get(customer))
        sources = self.sources(shopper, request, policy)
        found = ranker.candidates(shopper, request, sources, policy, self.config)
        weights = (
            policy.repeat,
            policy.viewed,
            policy.similar,
            policy.category,
            policy.popular,
            policy.trending,
        )
        orders = state.orders if state is not None else 0
        history = state.order_history if state is not None else []
        last_order = state.last_order_at if state is not None else 0.0
        interval = 60 * DAY_S
        if len(history) >= 2:
            interval = max((history[-1].ts - history[0].ts) / (len(history) - 1), DAY_S)
        since_order = (now - last_order) if last_order else 365 * DAY_S
        bought = shopper.items.bought
        offset = now / self.config.popular_tau_s
        out = []
        for sku, candidate in found.items():
            e = candidate.evidence
            hand = sum(w * x for w, x in zip(weights, e, strict=True))
            trend = self.trends.get(sku)
            lines = 0.0
            if trend is not None:
                lines = math.exp(min(trend.popular - offset, 700.0)) / self.config.max_signal_weight
            buyers = self.item_buyers.get(sku, 0)
            f: Features = {
                "hand": hand,
                "e_repeat": e[0],
                "e_similar": e[2],
                "e_category": e[3],
                "e_popular": e[4],
                "e_trending": e[5],
                "log_lines": math.log1p(lines),
                "log_buyers": math.log1p(buyers),
                "repeat_rate": (self.item_repeaters.get(sku, 0) + 0.5) / (buyers + 2.0),
                # Absent features would be left out of the scaler's statistics:
                # every candidate has every feature.
                "reorder": 0.0,
                "log_item_orders": 0.0,
                "item_share": 0.0,
                "log_days_since_item": 0.0,
                "in_last_order": 0.0,
            }
            if self.full:
                f["since_order_ratio"] = min(since_order / interval, 10.0)
                f["log_orders"] = math.log1p(orders)
                f["item_due"] = 0.0
            b = bought.get(sku)
            if b is not None:
                since = now - b.last_ts
                f["reorder"] = 1.0
                f["log_item_orders"] = math.log1p(b.orders)
                f["item_share"] = b.orders / max(orders, 1)
                f["log_days_since_item"] = math.log1p(since / DAY_S)
                f["in_last_order"] = float(abs(b.last_ts - last_order) < 1.0)
                if self.full:
                    f["item_due"] = min(since / (interval * max(orders, 1) / b.orders), 10.0)
            out.append((sku, f, hand))
        return out

    def _model_score(self, f: Features) -> float:
        if not self.trained:
            return 0.0
        if self.kind == "bayes":
            return float(self.model.predict_one(f))
        p = self.model.predict_proba_one(f).get(True, 0.5)
        p = min(max(p, 1e-6), 1.0 - 1e-6)
        return math.log(p / (1.0 - p))

    def rank(
        self,
        customer: str,
        state: CustomerState | None,
        k: int,
        bought: Container[str] | None,
        now: float,
    ) -> list[str]:
        if bought is not None:  # items new to the customer: the engine's ranking
            return super().rank(customer, state, k, bought, now)
        rows = self.features(customer, state, now)
        scored = sorted(
            (-(self.blend * hand + self.model_weight * self._model_score(f)), sku, f)
            for sku, f, hand in rows
        )
        self.shown[customer] = (now, [(sku, f) for _, sku, f in scored])
        return [sku for _, sku, _ in scored[:k]]

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None:
        if isinstance(event, ev.OrderPlaced) and event.items:
            key = event.customer_key
            basket = {line.sku for line in event.items}
            shown = self.shown.pop(key, None)
            if shown is not None and shown[0] == event.ts:
                self._learn_ranking(shown[1], basket, returning=state.orders > 1)
            items = self.shoppers.get(key)
            before = items.bought if items is not None else {}
            for sku in basket:
                known = before.get(sku)
                if known is None:
                    self.item_buyers[sku] = self.item_buyers.get(sku, 0) + 1
                elif known.orders == 1:
                    self.item_repeaters[sku] = self.item_repeaters.get(sku, 0) + 1
        super().learn(event, state)

    def _learn_ranking(
        self, shown: list[tuple[str, Features]], basket: set[str], *, returning: bool
    ) -> None:
        if returning:
            first = next((i for i, (sku, _) in enumerate(shown) if sku in basket), -1)
            self.first_truth.append(first)
        learn = self.model.learn_one
        if self.kind == "pairwise":
            # A linear RankNet: the difference of a positive and a negative is a
            # 1, the other way round a 0; what every candidate of one customer
            # shares cancels out.
            positives = [f for sku, f in shown if sku in basket][: self.pairs]
            negatives = [f for sku, f in shown if sku not in basket][: self.pairs]
            for fp in positives:
                for fn in negatives:
                    d = {name: fp[name] - fn[name] for name in fp}
                    learn(d, True)
                    learn({name: -v for name, v in d.items()}, False)
                    self.trained += 1
            return
        for sku, f in shown:
            learn(f, float(sku in basket) if self.kind == "bayes" else sku in basket)
            self.trained += 1


VARIANTS: dict[str, Callable[[], list[Learned]]] = {
    "logistic": lambda: [
        Learned(name="logistic alone", blend=0.0),
        Learned(name="logistic alone, rate 0.01", blend=0.0, learning_rate=0.01),
        Learned(name="logistic, fewer features", blend=0.0, full=False),
        Learned(name="hand + 0.05 logistic", model_weight=0.05),
        Learned(name="hand + 0.1 logistic", model_weight=0.1),
        Learned(name="hand + 0.2 logistic", model_weight=0.2),
        Learned(name="hand + 0.3 logistic", model_weight=0.3),
    ],
    "bayes": lambda: [
        Learned(name="bayes alone", kind="bayes", blend=0.0),
        Learned(name="bayes alone, fewer features", kind="bayes", blend=0.0, full=False),
        Learned(name="hand + bayes, fewer features", kind="bayes", full=False),
        Learned(
            name="hand + 0.5 bayes, fewer features", kind="bayes", full=False, model_weight=0.5
        ),
    ],
    "pairwise": lambda: [
        Learned(name="pairwise alone", kind="pairwise", blend=0.0, learning_rate=0.01),
        Learned(name="pairwise alone, rate 0.001", kind="pairwise", blend=0.0, learning_rate=0.001),
        Learned(name="hand + 0.3 pairwise", kind="pairwise", model_weight=0.3, learning_rate=0.01),
    ],
    "forest": lambda: [
        Learned(name="forest alone", kind="forest", blend=0.0),
        Learned(name="hand + 0.1 forest", kind="forest", model_weight=0.1),
    ],
    # The best two on the orders before 2011-06-01 (docs/recommendations.md).
    "chosen": lambda: [
        Learned(name="hand + bayes, fewer features", kind="bayes", full=False),
        Learned(name="hand + 0.05 logistic", model_weight=0.05),
    ],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tune_learned",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--split-at", required=True, type=day, help="YYYY-MM-DD: replay only before it"
    )
    parser.add_argument(
        "--after", action="store_true", help="replay after the split too (chosen variants only)"
    )
    parser.add_argument(
        "--variants",
        default="logistic,bayes",
        help=f"comma-separated groups: {', '.join(VARIANTS)} (default logistic,bayes)",
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default="tune_learned", help="results file name under results/")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    split = args.split_at
    stream = retail_stream(split, args.after)
    # First, the engine's own ranking through the same code (the model has no
    # say): where the order's products stood among all its candidates.
    learned = [Learned(name="hand score alone", model_weight=0.0)]
    learned += [variant for name in names for variant in VARIANTS[name]()]
    methods: list[quality_recs.Method] = [
        quality_recs.PulseRecs(),
        *learned,
        quality_recs.Popularity(),
    ]
    report = quality_recs.RecsReport(methods, k=args.k, split_at=split if args.after else None)
    replay(stream, [report], progress_every_s=3600.0)
    groups: tuple[str, ...] = ("returning",)
    if args.after:
        groups = ("returning", "returning_before", "returning_after")
    result = report.as_json()
    rows = [
        [name] + [f"{m[g][f'hr@{args.k}']:.4f} / {m[g][f'ndcg@{args.k}']:.4f}" for g in groups]
        for name, m in result["methods"].items()
    ]
    print_table(
        f"learned rankers over Pulse's candidates (orders of returning customers"
        f"{'' if args.after else ' before ' + args.split_at}; HR@{args.k} / NDCG@{args.k})",
        ["method", *groups],
        rows,
    )
    positions = learned[0].first_truth if learned else []
    bins = Counter(min(p // 10, 3) if p >= 0 else -1 for p in positions)
    print(
        f"{learned[0].name if learned else ''}: where the first product of the order stood "
        f"among all candidates (returning customers): "
        + ", ".join(
            f"{label} {bins.get(b, 0)}"
            for b, label in (
                (0, "1-10"),
                (1, "11-20"),
                (2, "21-30"),
                (3, "after 30"),
                (-1, "not a candidate"),
            )
        )
    )
    path = write_json(
        args.out,
        {
            "benchmark": "tune_learned",
            "split_at": args.split_at,
            "after": args.after,
            "recs": result,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
