"""Customer profiles from the Redis serving view, and the privacy rights on them."""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api import auth, deps, ingest, schemas
from api.problems import problem, unavailable
from api.producer import AckProducer, KafkaUnavailable
from api.routes.next_action import NBA_FIELD
from api.scores import ScoreCache
from engine import email_index
from engine.control import encode_control
from engine.nba.records import Served
from engine.privacy import EraseCustomer
from engine.profile import ProfileView, decode_view
from engine.rfm import RfmBands, rfm
from pulse.keys import RedisKeys
from pulse.settings import Settings

# An e-mail query: spaces spelled out, not \s (see the route below).
EMAIL_PATTERN = r"^[^@ \t\n\r\f\v]+@[^@ \t\n\r\f\v]+$"

# The hash field holding the MessagePack profile view (dataflows/redis_sink.py).
PROFILE_FIELD = "view"
# The hash field holding the score models' features (engine/scores/serving.py).
FEATURES_FIELD = "x"


async def load_view(redis: aioredis.Redis, keys: RedisKeys, customer_id: str) -> ProfileView | None:
    """The served profile, or None when the customer has none."""
    raw = await redis.hget(keys.profile(customer_id), PROFILE_FIELD)
    # None: no profile (the client does not decode responses, so it is bytes).
    return decode_view(raw) if isinstance(raw, bytes) else None


async def load_inbox(
    redis: aioredis.Redis, keys: RedisKeys, customer_id: str
) -> list[schemas.InboxMessage]:
    """The in-app messages the dispatcher delivered (dispatch/channels/inbox.py)."""
    raw = await redis.zrevrange(keys.inbox(customer_id), 0, -1)
    return [_inbox_message(member) for member in raw if isinstance(member, bytes)]


_inbox_message = msgspec.json.Decoder(schemas.InboxMessage).decode
_served = msgspec.json.Decoder(Served).decode
_json = msgspec.json.Encoder()


router = APIRouter(tags=["customers"], dependencies=[Depends(auth.require_read)])


@router.get(
    "/v1/customers/{customer_id}/profile",
    summary="A customer's unified profile",
    response_model=None,
    responses={
        200: schemas.ok("Profile", "The profile, with RFM scores as of now"),
        **schemas.problems(401, 403, 404, 422),
    },
)
async def get_profile(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
    bands: Annotated[RfmBands, Depends(deps.rfm_bands)],
    models: Annotated[ScoreCache | None, Depends(deps.score_cache)],
) -> Any:
    # One round trip: the view, the customer's score features, the models.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.profile(customer_id), PROFILE_FIELD, FEATURES_FIELD)
        pipe.get(keys.model("scores"))
        (raw, features), published = await pipe.execute()
    if not isinstance(raw, bytes):
        return problem(404, "no such customer", f"no profile for {customer_id!r}")
    view = decode_view(raw)
    segments = rfm(view.last_order_at, view.orders_12m, view.spend_12m, time.time(), bands)
    scores = models.score(features, published) if models is not None else None
    # Encoded by msgspec in one pass, not handed back as a dict for FastAPI's
    # jsonable_encoder to walk; asdict keeps the fields at their defaults (zero
    # counts, empty lists) that the view's own encoding leaves out.
    body = _json.encode({**msgspec.structs.asdict(view), "rfm": segments, "scores": scores})
    return Response(body, media_type="application/json")


@router.get(
    "/v1/customers",
    summary="Find customers by e-mail address",
    description=(
        "The customers whose profile's `traits.email` is this address (case and "
        "surrounding spaces aside), from an index the dataflow keeps by the address's "
        "digest. Empty when none; an erased customer is not found."
    ),
    response_model=None,
    responses={
        200: schemas.ok("CustomerMatches", "The customers with this address"),
        **schemas.problems(401, 403, 422),
    },
)
async def find_customers(
    # Spaces spelled out, not \s: Python's \s (which checks the request) also
    # matches U+0085 and other separators that the OpenAPI document's regex
    # (ECMA-262) does not, so a value valid by the document was refused.
    email: Annotated[str, Query(min_length=3, max_length=320, pattern=EMAIL_PATTERN)],
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
) -> Any:
    candidates = sorted(
        member.decode() if isinstance(member, bytes) else str(member)
        for member in await redis.smembers(keys.email(email_index.digest(email)))  # type: ignore[misc]
    )
    found: list[str] = []
    if candidates:
        # The index keeps every address a customer had: only the current one counts.
        async with redis.pipeline(transaction=False) as pipe:
            for customer_id in candidates:
                pipe.hget(keys.profile(customer_id), PROFILE_FIELD)
            views = await pipe.execute()
        for customer_id, raw in zip(candidates, views, strict=True):
            if isinstance(raw, bytes) and email_index.same(
                email, decode_view(raw).traits.get("email")
            ):
                found.append(customer_id)
    return ingest.json_response(schemas.CustomerMatches(email=email, customer_ids=found))


@router.get(
    "/v1/customers/{customer_id}/inbox",
    summary="A customer's in-app messages, newest first",
    description=(
        "What rules with `channel: in_app` delivered to this customer: the newest "
        "100, kept 30 days after the last one. Empty for a customer with none."
    ),
    response_model=None,
    responses={
        200: schemas.ok("Inbox", "The messages, newest first"),
        **schemas.problems(401, 403, 422),
    },
)
async def get_inbox(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
) -> Any:
    messages = await load_inbox(redis, keys, customer_id)
    return ingest.json_response(schemas.Inbox(customer_id=customer_id, messages=messages))


@router.delete(
    "/v1/customers/{customer_id}",
    status_code=202,
    summary="Erase a customer (right to erasure)",
    description=(
        "Puts an erasure on the control topic. The dataflow applies it at one point "
        "of the stream: the customer's state and linked anonymous ids become "
        "tombstones (replayed history cannot bring them back), and the served "
        "profile and segment memberships are deleted. The profile stops being "
        "served at once."
    ),
    response_model=None,
    responses={
        202: schemas.ok("ErasureAccepted", "The erasure is on the control topic"),
        **schemas.problems(401, 403, 422, 503),
    },
)
async def erase_customer(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
    producer: Annotated[AckProducer, Depends(deps.producer)],
    settings: Annotated[Settings, Depends(deps.settings)],
) -> Any:
    view = await load_view(redis, keys, customer_id)
    anonymous_ids = view.anonymous_ids if view is not None else []
    request = EraseCustomer(
        customer_id=customer_id,
        requested_at=time.time(),
        request_id=uuid.uuid4().hex,
        anonymous_ids=tuple(anonymous_ids),
    )
    try:
        await producer.send(settings.control_topic, customer_id.encode(), encode_control(request))
    except KafkaUnavailable as exc:
        return unavailable(str(exc))
    # The live next-best-action decision's reward key names the customer too
    # (dataflows/nba_step.py); earlier decisions' keys run out with their windows.
    live = await redis.hget(keys.profile(customer_id), NBA_FIELD)
    doomed = [keys.profile(customer_id), keys.inbox(customer_id)]
    if isinstance(live, bytes):
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            doomed.append(keys.nba_decision(_served(live).decision_id))
    await redis.delete(*doomed)
    body = schemas.ErasureAccepted(
        "erasure requested", customer_id, request.request_id, list(anonymous_ids)
    )
    return ingest.json_response(body, 202)


@router.get(
    "/v1/customers/{customer_id}/export",
    summary="Everything Pulse serves about a customer (right of access)",
    response_model=None,
    responses={
        200: schemas.ok(
            "CustomerExport", "The profile, segments, in-app messages and the Redis keys held"
        ),
        **schemas.problems(401, 403, 422),
    },
)
async def export_customer(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
) -> Any:
    profile_key = keys.profile(customer_id)
    view = await load_view(redis, keys, customer_id)
    # The per-customer keys Pulse writes (docs/profiles.md); named, not scanned,
    # so an export costs the same on a Redis with a hundred million keys.
    held = [profile_key] if view is not None else []
    inbox = await load_inbox(redis, keys, customer_id)
    if inbox:
        held.append(keys.inbox(customer_id))
    if await redis.exists(keys.emails(customer_id)):
        held.append(keys.emails(customer_id))  # the e-mail index's entries for them
    body = schemas.CustomerExport(
        customer_id=customer_id,
        exported_at=datetime.now(tz=UTC),
        profile=view,
        segments=list(view.segments) if view is not None else [],
        inbox=inbox,
        redis_keys=held,
    )
    return ingest.json_response(body)
