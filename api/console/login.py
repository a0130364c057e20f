"""Sign in and out.

The login form has no session yet to tie a CSRF token to, so it uses a
double-submit token: a random value in a SameSite=Strict cookie and the same
value in the form; another site can make a browser post the form but cannot
read the cookie to fill the field.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.session import COOKIE, SESSION_S
from api.console.web import Con, Seen, checked_form, form_of, render

router = APIRouter()

LOGIN_CSRF = "pulse_console_login"


def _cookie(response: Response, name: str, value: str, max_age: int, secure: bool) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/console",
    )


def login_page(
    request: Request, console: Con, message: str = "", status: int = 200
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request, console, "login.html", None, status=status, login_csrf=token, message=message
    )
    _cookie(response, LOGIN_CSRF, token, 600, request.url.scheme == "https")
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, console: Con) -> HTMLResponse:
    return login_page(request, console)


@router.post("/login", response_model=None)
async def login(request: Request, console: Con) -> Response:
    form = await form_of(request)
    expected = request.cookies.get(LOGIN_CSRF, "")
    if not expected or not hmac.compare_digest(expected, form.get("csrf", "")):
        return login_page(request, console, "The form expired: please sign in again.", 403)
    key = form.get("key", "")
    role = console.sessions.role_of(key)
    if role == "write":
        return login_page(
            request,
            console,
            "That is a write key: it may only send events. Sign in with a read or an admin key.",
            403,
        )
    token = console.sessions.sign_in(key)
    if token is None:
        return login_page(request, console, "That key is not valid.", 401)
    response = RedirectResponse("/console", status_code=303)
    _cookie(response, COOKIE, token, SESSION_S, request.url.scheme == "https")
    response.delete_cookie(LOGIN_CSRF, path="/console")
    return response


@router.post("/logout", response_model=None)
async def logout(request: Request, console: Con, viewer: Seen) -> Response:
    await checked_form(request, console, viewer)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response
