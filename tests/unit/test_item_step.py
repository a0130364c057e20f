"""The per-item step's snapshots: MessagePack bytes that restore the same record."""

from __future__ import annotations

import pickle

from dataflows.item_sink import ItemLogic, ItemRecord
from engine.popularity import ItemSignal, ItemState
from engine.recs.relations import CO_VIEWED, PairSignal


def _fed() -> ItemLogic:
    logic = ItemLogic(None)
    signals: list[ItemSignal | PairSignal] = [
        ItemSignal("SKU-1", 1.0, 1_767_600_000.0, "Mug", "kitchen", 4.95),
        PairSignal("SKU-1", CO_VIEWED, 1.0, 1_767_600_001.0, ("SKU-2", "SKU-3"), ("kitchen", None)),
        ItemSignal("SKU-1", 3.0, 1_767_600_002.5, "Mug", "kitchen", 4.95),
    ]
    logic.on_batch([signals])
    return logic


def test_a_snapshot_is_bytes_that_restore_the_same_record() -> None:
    logic = _fed()
    snapshot = logic.snapshot()
    assert isinstance(snapshot, bytes)
    restored = ItemLogic(snapshot)
    assert restored.snapshot() == snapshot
    assert restored._record == logic._record


def test_snapshots_of_earlier_versions_still_restore() -> None:
    """Recovery directories written before: the record pickled, and before the
    recommender only the popularity."""
    record = _fed()._record
    assert ItemLogic(pickle.loads(pickle.dumps(record)))._record == record
    popularity = ItemState(sku="SKU-9", log_score=1.5, name="Pan", category="kitchen", price=9.0)
    assert ItemLogic(popularity)._record == ItemRecord(popularity=popularity)


def test_without_recovery_a_snapshot_encodes_nothing() -> None:
    logic = ItemLogic(None, recovery=False)
    logic.on_batch([[ItemSignal("SKU-1", 1.0, 1_767_600_000.0, "Mug", "kitchen", 4.95)]])
    assert logic.snapshot() == b""
