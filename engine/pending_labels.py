"""A customer's snapshots waiting for their labels: part of the customer's state.

Outside ``engine/scores`` (whose modules read ``CustomerState``) so that
``engine/profile.py`` can hold them without an import cycle.
"""

from __future__ import annotations

import msgspec

Features = tuple[float, ...]


class Snapshot(msgspec.Struct, array_like=True, gc=False):
    """A customer's features at ``at``, waiting for the label of one score."""

    task: int  # index into TASKS
    at: float
    due: float  # at + the task's horizon: the label is known by then
    x: Features
    score: float  # what the model said at ``at`` (0 where no model scores there)
    at_event: bool  # taken at an event (else at a timer)
    ordered: bool = False  # an order came in [at, due)
    spend: float = 0.0  # net spend in [at, due) so far


class CustomerScores(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One customer's scores as served, and the snapshots waiting for labels."""

    propensity: float = 0.0
    churn: float = 0.0
    clv: float = 0.0
    scored_at: float = 0.0  # event time of the features behind the served scores
    pending: list[Snapshot] = []
    wake_at: float = 0.0  # a quiet customer's next snapshot (0: none planned)
