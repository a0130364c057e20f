"""The personalised ranking (engine/recs/ranker.py): contexts, filters, k, and that
what a customer just did moves the list."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import events as ev
from engine.customer import Engine
from engine.profile import CustomerState, profile_view
from engine.recs import ranker
from engine.recs.ranker import Context, Policy, Request, Shopper, Sources, parse_context
from engine.recs.relations import Similar
from engine.recs.shopper import Bought, Seen, ShopperItems, remember

T0 = 1_700_000_000.0
SKUS = [f"s{i}" for i in range(30)]
CATEGORIES = ["mugs", "bags", "toys", None]


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


# Contexts ----------------------------------------------------------------------------


def test_contexts_parse_and_bad_ones_say_why() -> None:
    assert parse_context("home") == Context("home")
    assert parse_context("cart") == Context("cart")
    assert parse_context("product:A-1:x") == Context("product", "A-1:x")
    with pytest.raises(ValueError, match="needs a SKU"):
        parse_context("product:")
    with pytest.raises(ValueError, match="home, cart or product"):
        parse_context("checkout")


def sources(similar: dict[str, list[Similar]] | None = None) -> Sources:
    popular = [Similar(s, 1.0 - i / 40, CATEGORIES[i % 4]) for i, s in enumerate(SKUS)]
    return Sources(similar=similar or {}, popular=popular)


def test_a_product_page_shows_that_products_similar_items_first() -> None:
    similar = {"s20": [Similar("s25", 1.0, "toys"), Similar("s26", 0.8, "toys")]}
    request = Request(k=3, context=Context("product", "s20"))
    got = ranker.recommend(Shopper(items=ShopperItems()), request, sources(similar))
    assert [r.sku for r in got[:2]] == ["s25", "s26"]
    assert got[0].reason == "similar"
    assert "s20" not in [r.sku for r in got]


def test_the_cart_context_anchors_on_the_cart_and_leaves_it_out() -> None:
    similar = {"s10": [Similar("s29", 1.0), Similar("s11", 0.9)]}
    shopper = Shopper(items=ShopperItems(), cart=frozenset({"s10", "s11"}))
    got = ranker.recommend(shopper, Request(k=5, context=Context("cart")), sources(similar))
    assert got[0].sku == "s29"
    assert not {"s10", "s11"} & {r.sku for r in got}


def test_repeats_follow_the_context_policy_and_consumables() -> None:
    items = ShopperItems(
        bought={
            "s28": Bought(10.0, 3, T0, "bags"),
            "s29": Bought(10.0, 3, T0, "coffee"),
        }
    )
    shopper = Shopper(items=items)
    home = [r.sku for r in ranker.recommend(shopper, Request(k=3), sources())]
    assert home[:2] == ["s28", "s29"]
    policy = Policy(consumables=frozenset({"coffee"}))
    product = Request(k=30, context=Context("product", "s0"))
    got = [r.sku for r in ranker.recommend(shopper, product, sources(), policy)]
    assert "s29" in got and "s28" not in got


def test_unknown_customers_get_popular_items() -> None:
    got = ranker.recommend(ranker.shopper_from_view(None, None), Request(k=4), sources())
    assert [r.sku for r in got] == SKUS[:4]
    assert {r.reason for r in got} == {"popular"}


def test_viewing_a_category_raises_it_in_the_next_request() -> None:
    """The acceptance check of issue 11, on the engine: views of one category move it up."""
    engine = Engine()
    state: CustomerState | None = None
    items = ShopperItems()
    catalogue = sources()
    popular_in = {
        c: [s for s in catalogue.popular if s.category == c] for c in ("mugs", "bags", "toys")
    }
    catalogue = msgspec.structs.replace(catalogue, popular_in=popular_in)

    def toys_in_top() -> int:
        shopper = ranker.shopper_from_view(profile_view(state) if state else None, items)
        got = ranker.recommend(shopper, Request(k=10), catalogue)
        return sum(r.category == "toys" for r in got)

    before = toys_in_top()
    for i in range(3):
        event = ev.ProductView(
            event_id=f"e{i}", customer_id="c1", timestamp=at(T0 + i), sku=f"t{i}", category="toys"
        )
        state, _ = engine.apply(state, event)
        remember(items, event)
    assert toys_in_top() > before


# Filters, k, determinism (properties) ------------------------------------------------

similars = st.lists(
    st.builds(Similar, st.sampled_from(SKUS), st.floats(0.01, 1.0), st.sampled_from(CATEGORIES)),
    max_size=12,
)
shoppers = st.builds(
    Shopper,
    items=st.builds(
        ShopperItems,
        viewed=st.lists(
            st.builds(
                Seen, st.sampled_from(SKUS), st.floats(T0, T0 + 1e6), st.sampled_from(CATEGORIES)
            ),
            max_size=6,
            unique_by=lambda s: s.sku,
        ),
        bought=st.dictionaries(
            st.sampled_from(SKUS),
            st.builds(
                Bought,
                st.floats(0, 100),
                st.integers(1, 9),
                st.floats(T0, T0 + 1e6),
                st.sampled_from(CATEGORIES),
            ),
            max_size=8,
        ),
    ),
    cart=st.frozensets(st.sampled_from(SKUS), max_size=4),
    affinity=st.dictionaries(st.sampled_from(["mugs", "bags", "toys"]), st.floats(0.1, 9.0)),
)
sources_st = st.builds(
    Sources,
    similar=st.dictionaries(st.sampled_from(SKUS), similars, max_size=10),
    popular=similars,
    trending=similars,
    popular_in=st.dictionaries(st.sampled_from(["mugs", "bags", "toys"]), similars),
    unavailable=st.frozensets(st.sampled_from(SKUS), max_size=5),
)
requests = st.builds(
    Request,
    k=st.integers(0, 15),
    context=st.one_of(
        st.just(Context("home")),
        st.just(Context("cart")),
        st.builds(Context, st.just("product"), st.sampled_from(SKUS)),
    ),
    include=st.frozensets(st.sampled_from(["mugs", "bags", "toys"]), max_size=2),
    exclude=st.frozensets(st.sampled_from(["mugs", "bags", "toys"]), max_size=2),
)
policies = st.builds(
    Policy,
    repeat_in=st.frozensets(st.sampled_from(["home", "cart", "product"])),
    consumables=st.frozensets(st.sampled_from(["mugs", "bags", "toys"]), max_size=1),
)


def known_categories(shopper: Shopper, src: Sources) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    lists = [src.popular, src.trending, *src.similar.values(), *src.popular_in.values()]
    for entries in lists:
        for s in entries:
            out.setdefault(s.sku, set()).add(s.category)
    for category, entries in src.popular_in.items():  # the list's own category counts
        for s in entries:
            out[s.sku].add(category)
    for seen in shopper.items.viewed:
        out.setdefault(seen.sku, set()).add(seen.category)
    for sku, b in shopper.items.bought.items():
        out.setdefault(sku, set()).add(b.category)
    return out


@given(shoppers, requests, sources_st, policies)
def test_filters_never_let_an_excluded_item_through(
    shopper: Shopper, request: Request, src: Sources, policy: Policy
) -> None:
    got = ranker.recommend(shopper, request, src, policy)
    categories = known_categories(shopper, src)
    for r in got:
        assert r.sku not in shopper.cart
        assert r.sku not in src.unavailable
        assert not (request.context.kind == "product" and r.sku == request.context.sku)
        assert r.category not in request.exclude
        if request.include:
            assert r.category in request.include
        if r.category is not None:
            assert r.category in categories[r.sku]
        bought = shopper.items.bought.get(r.sku)
        if bought is not None and request.context.kind not in policy.repeat_in:
            assert bought.category in policy.consumables


@given(shoppers, requests, sources_st, policies)
def test_k_is_respected_and_the_ranking_is_deterministic(
    shopper: Shopper, request: Request, src: Sources, policy: Policy
) -> None:
    got = ranker.recommend(shopper, request, src, policy)
    assert len(got) <= request.k
    assert len({r.sku for r in got}) == len(got)
    assert [r.score for r in got] == sorted((r.score for r in got), reverse=True)
    assert got == ranker.recommend(shopper, request, src, policy)


@given(shoppers, sources_st)
def test_a_plain_request_fills_k_when_there_are_enough_candidates(
    shopper: Shopper, src: Sources
) -> None:
    src = msgspec.structs.replace(src, unavailable=frozenset())
    request = Request(k=5)
    candidates = {s.sku for s in src.popular if s.sku not in shopper.cart}
    got = ranker.recommend(shopper, request, src)
    assert len(got) >= min(5, len(candidates))


def test_anchors_put_the_product_on_screen_first() -> None:
    items = ShopperItems(viewed=[Seen("v1", T0), Seen("v2", T0 - 1)])
    shopper = Shopper(items=items, cart=frozenset({"c1"}))
    request = Request(context=Context("product", "p1"))
    got = ranker.anchors(shopper, request)
    assert got[0] == ("p1", Policy().on_screen)
    assert {sku for sku, _ in got} == {"p1", "c1", "v1", "v2"}
