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
