"""Links in messages: one-click unsubscribe and tracked clicks.

Customers follow these from their mailbox, without an API key: the signed
token (pulse.links) is the authority. Each becomes an event on the events
topic (``message_unsubscribed`` revokes the channel's consent in the profile;
``message_clicked`` counts engagement and can be a rule's goal), with an id
derived from the token, so following a link twice counts once.
"""

from __future__ import annotations

import hashlib
import html
import logging
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse

from api import deps, schemas
from api.problems import problem, unavailable
from api.producer import AckProducer, KafkaUnavailable
from pulse import links
from pulse.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["links"])

_UNSUBSCRIBED: dict[int | str, dict[str, Any]] = {
    200: {"description": "Unsubscribed", "content": {"text/html": {}}},
    **schemas.problems(404, 503),
}
_NAMES = {"email": "e-mails", "sms": "text messages", "push": "notifications"}


def _event(kind: str, event_id: str, claims: links.LinkClaims) -> bytes:
    return orjson.dumps(
        {
            "type": kind,
            "event_id": event_id,
            "customer_id": claims.customer_id,
            "channel": "web",
            "message_id": claims.trigger_id,
            "message_channel": claims.channel,
            "trigger_id": claims.trigger_id,
            "rule_id": claims.rule_id,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )


def _claims(token: str, settings: Settings) -> links.LinkClaims | None:
    if not settings.link_secret:
        return None
    try:
        return links.verify(token, settings.link_secret)
    except links.BadLink:
        return None


async def _unsubscribe(token: str, settings: Settings, producer: AckProducer) -> Any:
    claims = _claims(token, settings)
    if claims is None:
        return problem(404, "unknown link", "this unsubscribe link is not valid")
    event = _event("message_unsubscribed", f"unsubscribe:{claims.trigger_id}", claims)
    try:
        await producer.send(settings.events_topic, claims.customer_id.encode(), event)
    except KafkaUnavailable as exc:
        return unavailable(str(exc))  # not recorded: the customer must be able to retry
    what = _NAMES.get(claims.channel, "messages")
    return HTMLResponse(
        f"<!doctype html><title>Unsubscribed</title><p>You will get no more "
        f"marketing {html.escape(what)} from us.</p>"
    )


async def unsubscribe(
    token: str,
    settings: Annotated[Settings, Depends(deps.settings)],
    producer: Annotated[AckProducer, Depends(deps.producer)],
) -> Any:
    return await _unsubscribe(token, settings, producer)


for _method, _summary in (
    ("GET", "Unsubscribe from a link in a message"),
    ("POST", "One-click unsubscribe (RFC 8058), as mail clients send it"),
):
    router.add_api_route(
        "/v1/u/{token}",
        unsubscribe,
        methods=[_method],
        summary=_summary,
        operation_id=f"unsubscribe_{_method.lower()}",
        response_model=None,
        responses=_UNSUBSCRIBED,
    )


@router.get(
    "/v1/r/{token}",
    summary="A tracked link: records the click, then redirects",
    response_model=None,
    status_code=302,
    responses={
        302: {"description": "To the link's target (the click is recorded)"},
        **schemas.problems(404),
    },
)
async def click(
    token: str,
    settings: Annotated[Settings, Depends(deps.settings)],
    producer: Annotated[AckProducer, Depends(deps.producer)],
) -> Any:
    claims = _claims(token, settings)
    if claims is None or not claims.url or not claims.url.startswith(("http://", "https://")):
        return problem(404, "unknown link", "this link is not valid")
    digest = hashlib.sha256(claims.url.encode()).hexdigest()[:12]
    event = _event("message_clicked", f"click:{claims.trigger_id}:{digest}", claims)
    try:
        await producer.send(settings.events_topic, claims.customer_id.encode(), event)
    except KafkaUnavailable as exc:
        # The customer still gets where they wanted to go; the click is lost.
        log.warning("click on %s not recorded: %s", claims.trigger_id, exc)
    return RedirectResponse(claims.url, status_code=302)
