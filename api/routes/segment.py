"""Segment's HTTP Tracking API: Segment clients send to Pulse unchanged.

Each call is validated as a Segment message, mapped to a Pulse event
(api/segment.py) and validated again as that event, then produced like any
other event. Errors name the Segment field. A call Pulse refuses is answered
as such (422, or its per-item result in a batch) and also dead-lettered and
counted (api/rejections.py): Segment's libraries report none of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api import auth, deps, ingest, schemas
from api.ingest import Collector, Item, Outcome
from api.problems import field_error, problem, unavailable
from api.rejections import Rejected, Rejections
from api.segment import CALL_TYPES, SegmentError, to_pulse
from engine.decode import DeadLetter, decode_event

router = APIRouter(tags=["segment"], dependencies=[Depends(auth.require_segment_ingest)])

_encoder = msgspec.json.Encoder()
_message_decoder = msgspec.json.Decoder(schemas.SegmentMessage)
_object_decoder = msgspec.json.Decoder(dict[str, Any])
BATCH_ROUTE = "/v1/batch"


class _BatchBody(msgspec.Struct, frozen=True, kw_only=True):
    """schemas.SegmentBatch, with each call kept raw to be validated on its own."""

    batch: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=schemas.MAX_BATCH)]
    context: dict[str, Any] = {}
    integrations: dict[str, Any] = {}
    writeKey: str | None = None
    sentAt: schemas.SegmentTime | None = None


_batch_decoder = msgspec.json.Decoder(_BatchBody)


class Call:
    """One Segment call read from its raw JSON: the item it becomes, and what
    to dead-letter if it is refused."""

    __slots__ = ("item", "rejected")

    def __init__(self, item: Item, rejected: Rejected | None = None) -> None:
        self.item = item
        self.rejected = rejected


def read_call(
    raw: bytes,
    index: int,
    route: str,
    decoder: msgspec.json.Decoder[Any],
    call: str | None,
    received: datetime,
    envelope: _BatchBody | None = None,
) -> Call:
    """Validate one call as a Segment message, map it and validate the event.

    In a batch, the batch's ``context`` is merged under the call's own and its
    ``sentAt`` stands for a call that has none.
    """
    try:
        decoder.decode(raw)
        message = _object_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _refused(raw, index, route, call, ingest.msgspec_errors(exc))
    if envelope is not None:
        if envelope.context:
            message["context"] = {**envelope.context, **(message.get("context") or {})}
        if envelope.sentAt is not None and "sentAt" not in message:
            message["sentAt"] = envelope.sentAt
    try:
        mapped = to_pulse(message, call, received)
    except SegmentError as exc:
        return _refused(raw, index, route, call, [{"field": exc.field, "reason": exc.reason}])
    decoded = decode_event(_encoder.encode(mapped.event), received.timestamp())
    if isinstance(decoded, DeadLetter):
        error = field_error(decoded.reason)
        error = {**error, "field": mapped.segment_field(error["field"])}
        return _refused(raw, index, route, call, [error])
    return Call(Item(index, event=decoded))


def _refused(
    raw: bytes, index: int, route: str, call: str | None, errors: list[dict[str, str]]
) -> Call:
    reason = "; ".join(": ".join(filter(None, (e["field"], e["reason"]))) for e in errors)
    kind = call or _type_of(raw)
    at = index if route == BATCH_ROUTE else None
    return Call(Item(index, errors=errors), Rejected(route, kind, reason, raw, at))


def _type_of(raw: bytes) -> str:
    """The ``type`` a refused call says it is, if it says one Pulse knows."""
    try:
        kind = _object_decoder.decode(raw).get("type")
    except (msgspec.ValidationError, msgspec.DecodeError):
        return ""
    return kind if kind in CALL_TYPES else ""


async def _submit(
    collector: Collector, rejections: Rejections, calls: Sequence[Call], received: float
) -> Outcome:
    """Produce the valid calls and dead-letter the refused ones, side by side."""
    items = [c.item for c in calls]
    refused = [c.rejected for c in calls if c.rejected is not None]
    if not refused:
        return await collector.submit(items)
    outcome, _ = await asyncio.gather(collector.submit(items), rejections.record(refused, received))
    return outcome


def _single(call: str) -> Callable[[Request, Collector, Rejections], Awaitable[Response]]:
    decoder = msgspec.json.Decoder(schemas.SEGMENT_CALLS[call])
    route = f"/v1/{call}"

    async def post_call(
        request: Request,
        collector: Annotated[Collector, Depends(deps.collector)],
        rejections: Annotated[Rejections, Depends(deps.rejections)],
    ) -> Response:
        body = await collector.read_body(request)
        now = time.time()
        read = read_call(body, 0, route, decoder, call, datetime.fromtimestamp(now, tz=UTC))
        outcome = await _submit(collector, rejections, [read], now)
        item = read.item
        if item.event is None:
            detail = "; ".join(f"{e['field']}: {e['reason']}" for e in item.errors)
            return problem(422, f"invalid {call} call", detail, errors=item.errors)
        if outcome.failure is not None:
            return unavailable(outcome.failure)
        return ingest.json_response(schemas.SegmentAccepted(True, item.event.event_id))

    return post_call


for _call in CALL_TYPES:
    _component = schemas.SEGMENT_CALLS[_call].__name__
    router.add_api_route(
        f"/v1/{_call}",
        _single(_call),
        methods=["POST"],
        name=f"segment_{_call}",
        summary=f"Segment {_call} call",
        response_model=None,
        openapi_extra=schemas.json_body(f"{_component}Call"),
        responses={
            200: schemas.ok("SegmentAccepted", "Kafka acknowledged the event"),
            **schemas.problems(401, 413, 415, 422, 503),
        },
    )


@router.post(
    BATCH_ROUTE,
    summary="Segment batch (what Segment's libraries send)",
    description=(
        "Up to 1,000 track, identify, page, screen, alias and group calls. Each is "
        "validated on its own and reported by index; a refused call is also put on "
        "the events dead-letter topic with the reason, and counted. See "
        "/v1/events/batch for the 503 semantics."
    ),
    response_model=None,
    openapi_extra=schemas.json_body("SegmentBatch"),
    responses={
        200: schemas.ok("SegmentBatchAccepted", "Every valid call is on Kafka; per-item results"),
        **schemas.problems(401, 413, 415, 422, 503, unavailable="BatchUnavailable"),
    },
)
async def post_batch(
    request: Request,
    collector: Annotated[Collector, Depends(deps.collector)],
    rejections: Annotated[Rejections, Depends(deps.rejections)],
) -> Response:
    body = await collector.read_body(request)
    now = time.time()
    try:
        envelope = _batch_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        errors = ingest.msgspec_errors(exc)
        reason = "invalid batch: " + "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        await rejections.record([Rejected(BATCH_ROUTE, "", reason, body)], now)
        return problem(422, "invalid batch", str(exc), errors=errors)
    received = datetime.fromtimestamp(now, tz=UTC)
    calls = [
        read_call(bytes(raw), i, BATCH_ROUTE, _message_decoder, None, received, envelope)
        for i, raw in enumerate(envelope.batch)
    ]
    outcome = await _submit(collector, rejections, calls, now)
    return ingest.batch_response([c.item for c in calls], outcome, segment=True)
