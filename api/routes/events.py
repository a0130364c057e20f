"""The collector: events in, acknowledged only once Kafka has them."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api import deps
from api.problems import field_error, problem
from api.producer import AckProducer, KafkaUnavailable
from engine.decode import DeadLetter, decode_event, encode_event
from engine.events import Event
from pulse.settings import Settings

router = APIRouter(tags=["events"])

_schemas, _components = msgspec.json.schema_components(
    [Event], ref_template="#/components/schemas/{name}"
)
EVENT_SCHEMA = _schemas[0]
EVENT_COMPONENTS = _components


@router.post(
    "/v1/events",
    status_code=202,
    summary="Send one event",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EVENT_SCHEMA}},
        }
    },
    responses={
        202: {"description": "Kafka acknowledged the event"},
        413: {"description": "Body over the size limit"},
        422: {"description": "Invalid event: the field and the reason"},
        503: {"description": "Kafka unreachable; retry after the Retry-After delay"},
    },
)
async def post_event(
    request: Request,
    settings: Annotated[Settings, Depends(deps.settings)],
    producer: Annotated[AckProducer, Depends(deps.producer)],
) -> Any:
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        return problem(413, "body too large", f"limit is {settings.max_body_bytes} bytes")
    decoded = decode_event(body, time.time())
    if isinstance(decoded, DeadLetter):
        return problem(422, "invalid event", decoded.reason, errors=[field_error(decoded.reason)])
    try:
        await producer.send(
            settings.events_topic, decoded.customer_key.encode(), encode_event(decoded)
        )
    except KafkaUnavailable as exc:
        response = problem(503, "event store unavailable", str(exc))
        response.headers["Retry-After"] = "5"
        return response
    return JSONResponse({"status": "accepted", "event_id": decoded.event_id}, status_code=202)
