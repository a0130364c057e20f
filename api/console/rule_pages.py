"""Rules list and the rule page: edit, check as you type, dry-run, review, deploy.

Checking, dry-running and deploying are the same functions as ``pulse rules
check / dry-run / deploy`` (api/console/rules.py says which). Reviewing the
diff needs a read key; deploying needs an admin key, and is refused for a set
that does not check, whoever asks.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console import rules
from api.console.pipeline import Reading
from api.console.rules import LiveSet, RuleRow
from api.console.session import Viewer
from api.console.state import Console
from api.console.web import Con, Refused, Seen, checked_form, need_admin, render
from engine.rules.validate import Loaded
from pulse.deployments import DeploymentError

router = APIRouter()

WINDOWS = {"15": "15 minutes", "60": "1 hour", "360": "6 hours", "1440": "1 day", "10080": "7 days"}


def _rows(console: Console) -> tuple[LiveSet, list[RuleRow], Reading]:
    live = console.rules.live()
    reading = console.pipeline.read()
    return live, rules.rows(live, reading.rule_stats), reading


def _find(console: Console, rule_id: str) -> tuple[LiveSet, RuleRow]:
    live, found, _ = _rows(console)
    for row in found:
        if row.rule_id == rule_id:
            return live, row
    raise Refused(404, "No such rule", f"No rule {rule_id!r} in the live rule set.")


@router.get("/rules", response_class=HTMLResponse)
async def rules_list(request: Request, console: Con, viewer: Seen) -> HTMLResponse:
    live, found, reading = await asyncio.to_thread(_rows, console)
    return render(request, console, "rules.html", viewer, live=live, rows=found, r=reading)


@router.get("/rules/{rule_id}", response_class=HTMLResponse)
async def rule_page(request: Request, console: Con, viewer: Seen, rule_id: str) -> HTMLResponse:
    live, row = await asyncio.to_thread(_find, console, rule_id)
    return render(
        request,
        console,
        "rule.html",
        viewer,
        live=live,
        row=row,
        text=live.files[row.file],
        windows=WINDOWS,
    )


async def _posted(
    request: Request, console: Console, viewer: Viewer, rule_id: str
) -> tuple[LiveSet, RuleRow, dict[str, str], dict[str, str]]:
    """The checked form, the rule, and the live set with the editor's text in it."""
    form = await checked_form(request, console, viewer)
    live, row = await asyncio.to_thread(_find, console, rule_id)
    files = rules.candidate(live, row.file, form.get("text", ""))
    return live, row, form, files


@router.post("/rules/{rule_id}/check", response_class=HTMLResponse)
async def check(request: Request, console: Con, viewer: Seen, rule_id: str) -> HTMLResponse:
    _live, row, _form, files = await _posted(request, console, viewer, rule_id)
    loaded = await asyncio.to_thread(rules.check, files)
    return render(request, console, "_problems.html", viewer, loaded=loaded, file=row.file)


@router.post("/rules/{rule_id}/dry-run", response_class=HTMLResponse)
async def dry_run(request: Request, console: Con, viewer: Seen, rule_id: str) -> HTMLResponse:
    _live, row, form, files = await _posted(request, console, viewer, rule_id)
    minutes = form.get("window", "60")
    if minutes not in WINDOWS:
        raise Refused(422, "Unknown window", f"Choose one of: {', '.join(WINDOWS.values())}.")
    try:
        result = await asyncio.to_thread(
            rules.run_dry, console.settings, files, row.rule_id, float(minutes) * 60
        )
    except (TimeoutError, OSError) as exc:
        raise Refused(503, "Dry-run failed", f"Reading the events topic: {exc}") from None
    if isinstance(result, Loaded):
        return render(request, console, "_problems.html", viewer, loaded=result, file=row.file)
    return render(
        request,
        console,
        "_dryrun.html",
        viewer,
        report=result,
        rule=result.rules.get(row.rule_id),
        window=WINDOWS[minutes],
    )


@router.post("/rules/{rule_id}/review", response_class=HTMLResponse)
async def review(request: Request, console: Con, viewer: Seen, rule_id: str) -> HTMLResponse:
    live, row, form, files = await _posted(request, console, viewer, rule_id)
    loaded = await asyncio.to_thread(rules.check, files)
    return render(
        request,
        console,
        "_review.html",
        viewer,
        live=live,
        row=row,
        loaded=loaded,
        diff=rules.diff(live, files),
        text=form.get("text", ""),
    )


@router.post("/rules/{rule_id}/deploy", response_class=HTMLResponse)
async def deploy(request: Request, console: Con, viewer: Seen, rule_id: str) -> HTMLResponse:
    need_admin(viewer, "Deploying a rule set")
    live, row, form, files = await _posted(request, console, viewer, rule_id)
    if form.get("base") != live.version:
        raise Refused(
            409,
            "The live version changed",
            f"Someone deployed version {live.version} since you reviewed; review again.",
        )
    note = f"console: {row.file}"
    try:
        result = await asyncio.to_thread(rules.deploy, console.settings, files, note)
    except DeploymentError as exc:
        raise Refused(503, "Deploy failed", str(exc)) from None
    if isinstance(result, Loaded):
        return render(
            request, console, "_problems.html", viewer, loaded=result, file=row.file, refused=True
        )
    console.rules.forget()
    return render(
        request,
        console,
        "_deployed.html",
        viewer,
        deployment=result,
        in_s=max(0.0, result.effective_at - time.time()),
    )
