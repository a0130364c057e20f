"""The collector: events in, acknowledged only once Kafka has them."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api import auth, deps, ingest, schemas
from api.ingest import Collector, Item
from api.problems import field_error, problem, unavailable
from engine.decode import DeadLetter, decode_event

router = APIRouter(tags=["events"], dependencies=[Depends(auth.require_ingest)])


class _BatchBody(msgspec.Struct, frozen=True):
    """The batch envelope; each event is decoded on its own from its raw JSON."""

    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=schemas.MAX_BATCH)]


_batch_decoder = msgspec.json.Decoder(_BatchBody)


@router.post(
    "/v1/events",
    status_code=202,
    summary="Send one event",
    response_model=None,
    openapi_extra=schemas.json_body("Event"),
    responses={
        202: schemas.ok("Accepted", "Kafka acknowledged the event"),
        **schemas.problems(401, 413, 415, 422, 503),
    },
)
async def post_event(
    request: Request, collector: Annotated[Collector, Depends(deps.collector)]
) -> Any:
    body = await collector.read_body(request)
    decoded = decode_event(body, time.time())
    if isinstance(decoded, DeadLetter):
        return problem(422, "invalid event", decoded.reason, errors=[field_error(decoded.reason)])
    outcome = await collector.submit([Item(0, event=decoded)])
    if outcome.failure is not None:
        return unavailable(outcome.failure)
    return ingest.json_response(schemas.Accepted("accepted", decoded.event_id), 202)


@router.post(
    "/v1/events/batch",
    summary="Send up to 1,000 events",
    description=(
        "Each event is validated on its own; valid ones are produced to Kafka together. "
        "The answer lists every item by index: accepted, or rejected with its errors. "
        "If Kafka does not acknowledge every valid event the answer is 503, and its "
        "results say which ones Kafka did acknowledge."
    ),
    response_model=None,
    openapi_extra=schemas.json_body("EventBatch"),
    responses={
        200: schemas.ok("BatchAccepted", "Every valid event is on Kafka; per-item results"),
        **schemas.problems(401, 413, 415, 422, 503, unavailable="BatchUnavailable"),
    },
)
async def post_events_batch(
    request: Request, collector: Annotated[Collector, Depends(deps.collector)]
) -> Response:
    body = await collector.read_body(request)
    try:
        batch = _batch_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        errors = ingest.msgspec_errors(exc)
        return problem(422, "invalid batch", str(exc), errors=errors)
    now = time.time()
    items = [Item.checked(i, decode_event(bytes(raw), now)) for i, raw in enumerate(batch.events)]
    outcome = await collector.submit(items)
    return ingest.batch_response(items, outcome)
