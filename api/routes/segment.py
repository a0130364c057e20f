"""Segment's HTTP Tracking API: Segment clients send to Pulse unchanged.

Each call is validated as a Segment message, mapped to a Pulse event
(api/segment.py) and validated again as that event, then produced like any
other event. Errors name the Segment field.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api import auth, deps, ingest, schemas
from api.ingest import Collector, Item
from api.problems import field_error, problem, unavailable
from api.segment import CALL_TYPES, SegmentError, to_pulse
from engine.decode import DeadLetter, decode_event

router = APIRouter(tags=["segment"], dependencies=[Depends(auth.require_segment_ingest)])

_encoder = msgspec.json.Encoder()
_message_decoder = msgspec.json.Decoder(schemas.SegmentMessage)


class _BatchBody(msgspec.Struct, frozen=True, kw_only=True):
    """schemas.SegmentBatch, with each call kept raw to be validated on its own."""

    batch: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=schemas.MAX_BATCH)]
    context: dict[str, Any] = {}
    integrations: dict[str, Any] = {}
    writeKey: str | None = None
    sentAt: schemas.SegmentTime | None = None


_batch_decoder = msgspec.json.Decoder(_BatchBody)


def segment_item(index: int, message: dict[str, Any], call: str | None, now: float) -> Item:
    """Map one Segment message and validate the Pulse event it becomes."""
    try:
        mapped = to_pulse(message, call)
    except SegmentError as exc:
        return Item(index, errors=[{"field": exc.field, "reason": exc.reason}])
    decoded = decode_event(_encoder.encode(mapped.event), now)
    if isinstance(decoded, DeadLetter):
        error = field_error(decoded.reason)
        return Item(index, errors=[{**error, "field": mapped.segment_field(error["field"])}])
    return Item(index, event=decoded)


def _single(call: str) -> Callable[[Request, Collector], Awaitable[Response]]:
    decoder = msgspec.json.Decoder(schemas.SEGMENT_CALLS[call])

    async def post_call(
        request: Request, collector: Annotated[Collector, Depends(deps.collector)]
    ) -> Response:
        body = await collector.read_body(request)
        try:
            message = decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return problem(422, f"invalid {call} call", str(exc), errors=ingest.msgspec_errors(exc))
        item = segment_item(0, msgspec.to_builtins(message), call, time.time())
        if item.event is None:
            detail = "; ".join(f"{e['field']}: {e['reason']}" for e in item.errors)
            return problem(422, f"invalid {call} call", detail, errors=item.errors)
        outcome = await collector.submit([item])
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
    "/v1/batch",
    summary="Segment batch (what Segment's libraries send)",
    description=(
        "Up to 1,000 track, identify, page and screen calls. Each is validated on its "
        "own and reported by index; see /v1/events/batch for the 503 semantics."
    ),
    response_model=None,
    openapi_extra=schemas.json_body("SegmentBatch"),
    responses={
        200: schemas.ok("SegmentBatchAccepted", "Every valid call is on Kafka; per-item results"),
        **schemas.problems(401, 413, 415, 422, 503, unavailable="BatchUnavailable"),
    },
)
async def post_batch(
    request: Request, collector: Annotated[Collector, Depends(deps.collector)]
) -> Response:
    body = await collector.read_body(request)
    try:
        envelope = _batch_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return problem(422, "invalid batch", str(exc), errors=ingest.msgspec_errors(exc))
    now = time.time()
    items = []
    for index, raw in enumerate(envelope.batch):
        try:
            message: dict[str, Any] = msgspec.to_builtins(_message_decoder.decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            items.append(Item(index, errors=ingest.msgspec_errors(exc)))
            continue
        message["context"] = {**envelope.context, **message["context"]}
        items.append(segment_item(index, message, None, now))
    outcome = await collector.submit(items)
    return ingest.batch_response(items, outcome, segment=True)
