"""Next-best-action: the customer's live decision, and explicit rewards for decisions.

The dataflow's policy decides (dataflows/nba_step.py) and writes each
customer's live decision into the profile hash (field ``nba``) and
``nba:decision:<id>`` -> customer until its window ends. A read is one Redis
round trip and evaluates no model; a reward is one read and one event produced
to the events topic, which reaches the policy through the customer's step like
any other event (docs/next-best-action.md, "Integration").
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Request

from api import auth, deps, ingest, schemas
from api.ingest import Collector, Item
from api.problems import problem, unavailable
from engine.decode import DeadLetter, decode_event
from engine.nba.customer import EXPLICIT_REWARD
from engine.nba.records import Served
from pulse.keys import RedisKeys

# The profile hash field with the live decision (dataflows/nba_step.py NBA_FIELD).
NBA_FIELD = "nba"


_live = msgspec.json.Decoder(Served)
_reward = msgspec.json.Decoder(schemas.DecisionReward)
_json = msgspec.json.Encoder()


async def control_action(request: Request) -> str:
    """The control action of actions.yaml, read at start-up (api/app.py)."""
    value: str = request.app.state.nba_control
    return value


read_router = APIRouter(tags=["next-best-action"], dependencies=[Depends(auth.require_read)])
reward_router = APIRouter(tags=["next-best-action"], dependencies=[Depends(auth.require_ingest)])


@read_router.get(
    "/v1/customers/{customer_id}/next-action",
    summary="What to show this customer now",
    description=(
        "The customer's live next-best-action decision: the action, its params, "
        "and the decision id to reward. Without one (no decision yet, its window "
        "is over, or a customer Pulse does not know) the control action "
        "(`nothing`) with no decision id: never an error. One Redis read; no "
        "model runs in the request."
    ),
    response_model=None,
    responses={
        200: schemas.ok("NextAction", "The live decision, or the control action"),
        **schemas.problems(401, 403, 422),
    },
)
async def get_next_action(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
    control: Annotated[str, Depends(control_action)],
) -> Any:
    raw = await redis.hget(keys.profile(customer_id), NBA_FIELD)
    live = _live.decode(raw) if isinstance(raw, bytes) else None
    if live is None or live.expires_at <= time.time():
        body = schemas.NextAction(
            customer_id=customer_id,
            action=control,
            decision_id=None,
            params={},
            decided_at=None,
            expires_at=None,
        )
    else:
        body = schemas.NextAction(
            customer_id=customer_id,
            action=live.action,
            decision_id=live.decision_id,
            params=live.params,
            decided_at=live.at,
            expires_at=live.expires_at,
        )
    return ingest.json_response(body)


@reward_router.post(
    "/v1/decisions/{decision_id}/reward",
    status_code=202,
    summary="Reward a decision",
    description=(
        "The website says how well a decision did: `value` from 0 to 1 (default 1; "
        "the body may be left out). It becomes a `custom` event named "
        "`decision_reward` on the events topic, with the event id "
        "`decision_reward:<decision_id>`, so a retried call is a duplicate the "
        "engine drops; the decision settles with the larger of what it had "
        "earned and this value (times its action's weight). 404 when the "
        "decision is unknown or its window is over."
    ),
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": schemas.ref("DecisionReward")}},
        }
    },
    responses={
        202: schemas.ok("RewardAccepted", "The reward is on the events topic"),
        **schemas.problems(401, 404, 413, 415, 422, 503),
    },
)
async def post_reward(
    decision_id: str,
    request: Request,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
    collector: Annotated[Collector, Depends(deps.collector)],
) -> Any:
    body = await collector.read_body(request)
    if body.strip():
        try:
            reward = _reward.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            errors = ingest.msgspec_errors(exc)
            detail = "; ".join(f"{e['field'] or 'body'}: {e['reason']}" for e in errors)
            return problem(422, "invalid reward", detail, errors=errors)
    else:
        reward = schemas.DecisionReward()
    owner = await redis.get(keys.nba_decision(decision_id))
    if not isinstance(owner, bytes):
        return problem(
            404,
            "no such decision",
            f"decision_id: {decision_id!r} is unknown, or its window is over",
        )
    customer = owner.decode()
    event_id = f"{EXPLICIT_REWARD}:{decision_id}"
    # A decision on an anonymous shopper's profile is keyed "anon:<id>".
    who = (
        {"anonymous_id": customer[len("anon:") :]}
        if customer.startswith("anon:")
        else {"customer_id": customer}
    )
    raw = _json.encode(
        {
            "type": "custom",
            "name": EXPLICIT_REWARD,
            "event_id": event_id,
            **who,
            "properties": {"decision_id": decision_id, "value": reward.value},
        }
    )
    event = decode_event(raw, time.time())
    if isinstance(event, DeadLetter):  # an id too long for an event id, say
        return problem(404, "no such decision", f"decision_id: {event.reason}")
    outcome = await collector.submit([Item(0, event=event)])
    if outcome.failure is not None:
        return unavailable(outcome.failure)
    accepted = schemas.RewardAccepted(
        status="accepted", decision_id=decision_id, event_id=event_id, value=reward.value
    )
    return ingest.json_response(accepted, 202)
