"""What every ingest endpoint shares: bounded body reading, validation results,
producing to Kafka with acknowledgements, and honest answers when Kafka fails.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from fastapi import Request
from fastapi.responses import Response

from api import schemas
from api.problems import ProblemError, field_error, unavailable
from api.producer import AckProducer, KafkaUnavailable
from engine.decode import DeadLetter, encode_event
from engine.events import BaseEvent
from pulse.settings import Settings

_BODY_STATE = "pulse_body"
_MISSING_FIELD = re.compile(r"Object missing required field `([^`]+)`")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Item:
    """One event of a request: valid (``event``) or refused (``errors``)."""

    index: int
    event: BaseEvent | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    @staticmethod
    def checked(index: int, decoded: BaseEvent | DeadLetter) -> Item:
        if isinstance(decoded, DeadLetter):
            return Item(index, errors=[field_error(decoded.reason)])
        return Item(index, event=decoded)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Which valid items Kafka acknowledged; ``failure`` is why the others were not."""

    acknowledged: frozenset[int]
    failure: str | None = None


def msgspec_errors(exc: msgspec.ValidationError | msgspec.DecodeError) -> list[dict[str, str]]:
    """A request-level decoding error; a missing field is named itself, not its parent."""
    if not isinstance(exc, msgspec.ValidationError):
        return [{"field": "", "reason": f"undecodable: {exc}"}]
    error = field_error(str(exc))
    missing = _MISSING_FIELD.fullmatch(error["reason"])
    if missing is not None:
        parent = error["field"]
        name = missing.group(1)
        return [
            {"field": f"{parent}.{name}" if parent else name, "reason": "required field missing"}
        ]
    return [error]


class Collector:
    """Reads request bodies within the limit and puts events on the events topic."""

    def __init__(self, settings: Settings, producer: AckProducer) -> None:
        self.settings = settings
        self.producer = producer

    async def read_body(self, request: Request) -> bytes:
        """The request body, gunzipped if sent so; 413 past ``max_body_bytes``.

        Cached on the request, so an auth dependency and the route can both read it.
        """
        cached: bytes | None = getattr(request.state, _BODY_STATE, None)
        if cached is not None:
            return cached
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            body = _gunzip(body, limit)
        elif encoding not in ("identity", ""):
            raise ProblemError(
                415, "unsupported content encoding", f"{encoding!r}: send identity or gzip"
            )
        setattr(request.state, _BODY_STATE, body)
        return body

    async def submit(self, items: Sequence[Item]) -> Outcome:
        """Produce every valid item, keyed by customer, and wait for all acknowledgements."""
        valid = [item for item in items if item.event is not None]
        topic = self.settings.events_topic
        sends = [
            self.producer.send(topic, item.event.customer_key.encode(), encode_event(item.event))
            for item in valid
            if item.event is not None
        ]
        results: list[BaseException | None]
        if len(sends) == 1:
            # One event (POST /v1/events): awaited in this task; gather would
            # wrap it in a task of its own (5 % of the collector's time, py-spy).
            try:
                await sends[0]
                results = [None]
            except KafkaUnavailable as exc:
                results = [exc]
        else:
            results = await asyncio.gather(*sends, return_exceptions=True)
        acknowledged: set[int] = set()
        failure: str | None = None
        for item, result in zip(valid, results, strict=True):
            if result is None:
                acknowledged.add(item.index)
            elif isinstance(result, KafkaUnavailable):
                failure = failure or str(result)
            else:
                raise result
        return Outcome(frozenset(acknowledged), failure)


def results(items: Sequence[Item], outcome: Outcome) -> list[schemas.ItemResult]:
    out = []
    for item in items:
        if item.event is None:
            errors = [schemas.FieldError(**e) for e in item.errors]
            out.append(schemas.ItemResult(index=item.index, status="rejected", errors=errors))
        else:
            acked = item.index in outcome.acknowledged
            out.append(
                schemas.ItemResult(
                    index=item.index,
                    status="accepted" if acked else "unacknowledged",
                    event_id=item.event.event_id,
                )
            )
    return out


def batch_response(items: Sequence[Item], outcome: Outcome, *, segment: bool = False) -> Response:
    """200 with per-item results, or 503 naming what Kafka did and did not acknowledge."""
    listed = results(items, outcome)
    accepted = sum(r.status == "accepted" for r in listed)
    rejected = sum(r.status == "rejected" for r in listed)
    if outcome.failure is not None:
        missing = len(listed) - accepted - rejected
        return unavailable(
            f"Kafka acknowledged {accepted} of {accepted + missing} valid events "
            f"({outcome.failure}); resend those marked unacknowledged",
            accepted=accepted,
            rejected=rejected,
            unacknowledged=missing,
            results=msgspec.to_builtins(listed),
        )
    body: schemas.BatchAccepted
    if segment:
        body = schemas.SegmentBatchAccepted(
            success=True, accepted=accepted, rejected=rejected, results=listed
        )
    else:
        body = schemas.BatchAccepted(accepted=accepted, rejected=rejected, results=listed)
    return json_response(body)


def json_response(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, "body too large", f"limit is {limit} bytes")


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProblemError(422, "invalid request", f"undecodable: bad gzip data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    if not inflater.eof:
        raise ProblemError(422, "invalid request", "undecodable: truncated gzip data")
    return out
