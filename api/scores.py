"""Scores at request time: the published models (dataflows/score_models.py)
applied to the customer's latest features (stored beside the profile).

Decoding the models builds River objects (a fraction of a millisecond), so the
decoded models are kept while the published bytes stay the same: a request
pays a bytes comparison and three dot products.
"""

from __future__ import annotations

import logging

import msgspec

from engine.scores.labels import ScoreSettings
from engine.scores.serving import (
    ScoreServer,
    ServedScores,
    decode_features,
    decode_published,
)

log = logging.getLogger(__name__)


class ScoreCache:
    """The latest published models, decoded once per publication."""

    def __init__(self, settings: ScoreSettings) -> None:
        self._untrained = ScoreServer.untrained(settings)
        self._raw: bytes | None = None
        self._server = self._untrained

    def server(self, raw: bytes | None) -> ScoreServer:
        if raw is None:
            return self._untrained  # nothing learned (published) yet
        if raw != self._raw:
            try:
                self._server = ScoreServer(decode_published(raw))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                # Another version's models: keep serving the last good ones.
                log.warning("the published score models cannot be read (%s): kept the last", exc)
            self._raw = raw
        return self._server

    def score(self, features: bytes | None, models: bytes | None) -> ServedScores | None:
        """A customer's scores, or None without features (an anonymous profile,
        or scores switched off in the dataflow)."""
        if features is None:
            return None
        try:
            at, x = decode_features(features)
            return self.server(models).score(x, at)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            log.warning("a customer's score features cannot be read (%s)", exc)
            return None
