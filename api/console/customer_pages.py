"""Customer 360: search, the customer's page, export and erase (admin).

Search takes a customer id, or an e-mail address, which ``GET /v1/customers?email=``
finds through the index the dataflow keeps (engine/email_index.py).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.customers import NEXT_ACTION, InProcess
from api.console.state import Console
from api.console.web import Con, Refused, Seen, checked_form, need_admin, render

router = APIRouter()


def _api(console: Console) -> InProcess:
    if console.api is None:
        raise Refused(503, "Starting", "The console is starting; try again in a moment.")
    return console.api


@router.get("/customers", response_class=HTMLResponse, response_model=None)
async def search(request: Request, console: Con, viewer: Seen, q: str = "") -> Response:
    q = q.strip()
    if not q:
        return render(request, console, "customers.html", viewer, q=q, message="")
    api = _api(console)
    if "@" in q:
        status, found = await api.get(f"/v1/customers?email={quote(q, safe='@')}")
        ids: list[str] = found.get("customer_ids", []) if status == 200 and found else []
        if len(ids) == 1:
            return RedirectResponse(f"/console/customers/{quote(ids[0], safe='')}", 303)
        if ids:
            message = f"{len(ids)} customers have the e-mail {q!r}: {', '.join(ids)}."
            return render(request, console, "customers.html", viewer, q=q, message=message)
        message = f"No customer with the e-mail {q!r}."
        return render(request, console, "customers.html", viewer, q=q, message=message, status=404)
    status, _ = await api.get(f"/v1/customers/{quote(q, safe='')}/profile")
    if status == 200:
        return RedirectResponse(f"/console/customers/{quote(q, safe='')}", status_code=303)
    message = f"No profile for customer id {q!r}."
    return render(request, console, "customers.html", viewer, q=q, message=message, status=404)


@router.get("/customers/{customer_id}", response_class=HTMLResponse)
async def customer(request: Request, console: Con, viewer: Seen, customer_id: str) -> HTMLResponse:
    api = _api(console)
    cid = quote(customer_id, safe="")
    base = f"/v1/customers/{cid}"
    optional: dict[str, str] = {}
    if api.has(NEXT_ACTION):
        optional["next_action"] = f"{base}/next-action"
    status, profile = await api.get(f"{base}/profile")
    if status != 200:
        profile = None
    aliases = list(profile.get("anonymous_ids", [])) if profile else []
    paths = {
        "recommendations": f"{base}/recommendations?k=10",
        "inbox": f"{base}/inbox",
        **optional,
    }
    # The timeline (Kafka, in a thread) and the API's routes at the same time.
    timeline_read = asyncio.to_thread(console.tail.timeline, customer_id, aliases)
    timeline, *answers = await asyncio.gather(timeline_read, *(api.get(p) for p in paths.values()))
    got: dict[str, Any] = {}
    for name, (status, body) in zip(paths, answers, strict=True):
        got[name] = body if status == 200 else None
    scores = profile.get("scores") if profile else None  # docs/scores.md
    return render(
        request,
        console,
        "customer.html",
        viewer,
        customer_id=customer_id,
        profile=profile,
        recommendations=got["recommendations"],
        inbox=got["inbox"],
        next_action=got.get("next_action"),
        has_next_action="next_action" in optional,
        scores=scores,
        timeline=timeline,
        status=200 if profile else 404,
    )


@router.get("/customers/{customer_id}/export", response_model=None)
async def export(console: Con, viewer: Seen, customer_id: str) -> Response:
    need_admin(viewer, "Exporting a customer's data")
    status, body = await _api(console).get(f"/v1/customers/{quote(customer_id, safe='')}/export")
    if status != 200:
        raise Refused(status, "Export failed", str(body))
    return Response(
        orjson.dumps(body, option=orjson.OPT_INDENT_2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{cid_file(customer_id)}"'},
    )


def cid_file(customer_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in customer_id)
    return f"pulse-export-{safe}.json"


@router.post("/customers/{customer_id}/erase", response_class=HTMLResponse)
async def erase(request: Request, console: Con, viewer: Seen, customer_id: str) -> HTMLResponse:
    need_admin(viewer, "Erasing a customer")
    form = await checked_form(request, console, viewer)
    if form.get("confirm") != customer_id:
        raise Refused(422, "Not confirmed", "Type the customer id to confirm the erasure.")
    status, body = await _api(console).delete(f"/v1/customers/{quote(customer_id, safe='')}")
    if status != 202:
        raise Refused(status, "Erasure failed", str(body))
    return render(request, console, "_erased.html", viewer, body=body)
