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


def test_a_list_serves_until_its_ttl_then_must_be_read_again() -> None:
    lists = SharedLists(ttl_s=1.0)
    assert lists.get("k", 100.0) is None
    kept = lists.put("k", [(b"a", 3.0)], 100.0)
    assert lists.get("k", 100.5) is kept
    assert lists.get("k", 101.0) is None
    assert lists.get("other", 100.5) is None
