"""The web console under ``/console``: overview, rules, customer 360, charts.

Server-rendered (Jinja2) pages with htmx and uPlot shipped in ``static/``,
so it works offline with nothing to build. ``install`` adds it to the API
app; ``start`` and ``stop`` run in the app's lifespan.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.auth import KeyRing
from api.console import customer_pages, login, overview, rule_pages, state
from api.console.session import Sessions
from api.console.state import HERE, Console
from api.console.web import Refused, render
from pulse.settings import Settings

__all__ = ["install", "start", "stop"]

start = state.start
stop = state.stop


def install(app: FastAPI, settings: Settings, keyring: KeyRing) -> Console:
    """Mount the console on ``app``; its clients open lazily, on first use."""
    keys = settings.write_keys + settings.read_keys + settings.admin_keys
    console = state.make(settings, Sessions(keyring, keys))
    app.state.console = console
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for module in (login, overview, rule_pages, customer_pages):
        app.include_router(module.router, prefix="/console", include_in_schema=False)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> HTMLResponse | RedirectResponse:
        if exc.status == 401 and request.headers.get("hx-request") is None:
            return login.login_page(request, console, exc.detail, 401)
        fragment = request.headers.get("hx-request") is not None
        return render(
            request,
            console,
            "_refused.html" if fragment else "refused.html",
            console.sessions.viewer(request.cookies.get("pulse_console")),
            status=exc.status,
            title=exc.title,
            detail=exc.detail,
        )

    return console
