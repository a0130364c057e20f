"""Customer scores learned online: purchase propensity, churn risk, lifetime value.

Pure (no I/O, no Bytewax, no Redis). ``features`` derives a customer's numbers
from the profile state; ``Scorer`` takes snapshots, waits for their delayed
labels, tests then trains the ``ScoreModels`` (River linear models, or the
baselines they are measured against). See docs/scores.md.
"""

from engine.pending_labels import CustomerScores, Snapshot
from engine.scores.baselines import RfmRate, RunRateSpend
from engine.scores.features import FEATURES, Features, as_dict, features
from engine.scores.labels import (
    CHURN,
    CLV,
    PROPENSITY,
    TASKS,
    Example,
    ScoreModels,
    Scorer,
    ScoreSettings,
    ScoreView,
    decode_scores,
    encode_scores,
)
from engine.scores.models import LinearScore, LinearState, ScoreModel, merge

__all__ = [
    "CHURN",
    "CLV",
    "FEATURES",
    "PROPENSITY",
    "TASKS",
    "CustomerScores",
    "Example",
    "Features",
    "LinearScore",
    "LinearState",
    "RfmRate",
    "RunRateSpend",
    "ScoreModel",
    "ScoreModels",
    "ScoreSettings",
    "ScoreView",
    "Scorer",
    "Snapshot",
    "as_dict",
    "decode_scores",
    "encode_scores",
    "features",
    "merge",
]
