"""The shared popularity lists (api/lists.py): decoded as the ranking takes them,
and served for a second at most."""

from __future__ import annotations

import math

from api.lists import SharedLists, ranked_rows
from engine.recs.relations import Similar


def test_rows_become_shares_of_the_best() -> None:
    rows = [(b"a", 10.0), (b"b", 9.0)]
    assert ranked_rows(rows) == [Similar("a", 1.0), Similar("b", math.exp(-1.0))]
    assert ranked_rows([]) == []
    assert ranked_rows([(b"a", -math.inf)]) == [Similar("a", 0.0)]


def test_a_list_serves_until_its_ttl_then_one_request_reads_it_again() -> None:
    lists = SharedLists(ttl_s=1.0)
    assert lists.get("k", 100.0) is None
    kept = lists.put("k", [(b"a", 3.0)], 100.0)
    assert lists.get("k", 100.5) is kept
    assert lists.get("other", 100.5) is None
    # Stale: the first request to see it reads it; the others serve the stale
    # list meanwhile, and again read it if that request never put its answer.
    assert lists.get("k", 101.0) is None
    assert lists.get("k", 101.2) is kept
    assert lists.get("k", 102.0) is None
    fresh = lists.put("k", [(b"b", 3.0)], 102.1)
    assert lists.get("k", 102.2) is fresh


def test_a_longer_read_than_kept_reads_again() -> None:
    lists = SharedLists(ttl_s=1.0)
    kept = lists.put("k", [(b"a", 3.0)], 100.0, length=50)
    assert lists.get("k", 100.1, length=50) is kept
    assert lists.get("k", 100.1, length=101) is None


def test_overall_lists_get_their_categories_once_per_sku() -> None:
    """The overall lists hold bare SKUs: each unknown one is asked for once,
    and an item the hash has no category for is not asked for again."""
    lists = SharedLists(ttl_s=1.0)
    lists.put("popular", [(b"a", 3.0), (b"b", 2.0), (b"c", 1.0)], 100.0)
    lists.put("trending", [(b"c", 3.0), (b"d", 2.0)], 100.0)
    missing = lists.unknown_categories("popular", "trending")
    assert missing == ["a", "b", "c", "d"]
    lists.learn_categories(missing, [b"mugs", None, b"garden", b"mugs"], ["popular", "trending"])
    assert [s.category for s in lists.items("popular")] == ["mugs", None, "garden"]
    assert [s.category for s in lists.items("trending")] == ["garden", "mugs"]
    assert lists.unknown_categories("popular", "trending") == []
    # A fresh read of a list knows the categories already read; only new SKUs are asked.
    lists.put("popular", [(b"e", 4.0), (b"a", 3.0), (b"b", 2.0)], 101.5)
    assert [s.category for s in lists.items("popular")] == [None, "mugs", None]
    assert lists.unknown_categories("popular", "trending") == ["e"]
