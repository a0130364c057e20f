"""What every console page shares: who is looking, rendering, forms, refusals.

A page asks for ``Seen`` (a signed-in viewer, or the login page with a 401);
an admin action asks for ``Admin`` on top (a 403 that says why). Every POST
is checked for the session's CSRF token, from the form field ``csrf`` or
htmx's ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from api.console.session import COOKIE, Viewer
from api.console.state import Console


class Refused(Exception):
    """Ends a console request with a page (or fragment) that says why."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


async def console_of(request: Request) -> Console:
    request.state.console_started = time.perf_counter()
    value: Console = request.app.state.console
    return value


Con = Annotated[Console, Depends(console_of)]


async def viewer_of(request: Request, console: Con) -> Viewer:
    viewer = console.sessions.viewer(request.cookies.get(COOKIE))
    if viewer is None:
        raise Refused(
            401,
            "Sign in",
            "The console needs an API key: sign in with a read key to view, or an admin "
            "key to deploy rules and erase customers.",
        )
    return viewer


Seen = Annotated[Viewer, Depends(viewer_of)]


def need_admin(viewer: Viewer, action: str) -> None:
    if not viewer.may("admin"):
        raise Refused(
            403,
            "Admin key needed",
            f"{action} needs an admin key; you are signed in with a read key, which may only "
            "view. Sign out and sign in with an admin key (setting admin_keys).",
        )


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form body (what htmx and plain forms send), first value per name."""
    body = await request.body()
    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}


async def checked_form(request: Request, console: Console, viewer: Viewer) -> dict[str, str]:
    """The form of a POST whose CSRF token matches the session's, else a 403."""
    form = await form_of(request)
    presented = form.get("csrf") or request.headers.get("x-csrf-token")
    if not console.sessions.csrf_ok(viewer, presented):
        raise Refused(
            403,
            "Form expired",
            "This form's security token does not match your session (CSRF protection): "
            "reload the page and try again.",
        )
    return form


def render(
    request: Request,
    console: Console,
    name: str,
    viewer: Viewer | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A template with what every page needs, and its server-side time as a
    ``Server-Timing`` header (what benchmarks/api.py reports per page)."""
    base = {
        "viewer": viewer,
        "csrf": console.sessions.csrf(viewer) if viewer is not None else "",
        "path": request.url.path,
    }
    response = console.templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status
    )
    started = getattr(request.state, "console_started", None)
    if started is not None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"render;dur={elapsed_ms:.2f}"
    return response
