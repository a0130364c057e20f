"""RFC 9457 problem responses that name the bad field and why."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# msgspec's path: .field, [index], and [...] for a value inside a map.
_FIELD = re.compile(r" - at `\$((?:\.[A-Za-z_0-9]+|\[\d+\]|\[\.\.\.\])*)`$")

RETRY_AFTER_S = 5
"""What a client that got a 503 from the collector is told to wait."""


def field_error(reason: str) -> dict[str, str]:
    """Split a msgspec validation message into {field, reason}."""
    match = _FIELD.search(reason)
    if match is None:
        return {"field": "", "reason": reason}
    field = match.group(1).lstrip(".")
    return {"field": field, "reason": reason[: match.start()]}


def problem(status: int, title: str, detail: str = "", **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def unavailable(detail: str, **extra: Any) -> JSONResponse:
    """503: Kafka did not acknowledge; the client should retry after a while."""
    response = problem(503, "event store unavailable", detail, **extra)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


class ProblemError(Exception):
    """Raised anywhere in a request (dependencies included) to answer with a problem."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JSONResponse:
        response = problem(self.status, self.title, self.detail, **self.extra)
        response.headers.update(self.headers)
        return response


def install(app: FastAPI) -> None:
    """Make every error the app answers with a problem+json body."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_crash)


async def _on_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return exc.response()


async def _on_validation(_request: Request, exc: Exception) -> Response:
    """FastAPI's own parameter validation (path, query), in the same shape as ours."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())[1:]),
            "reason": str(error.get("msg", "invalid")),
        }
        for error in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return problem(422, "invalid request", detail, errors=errors)


async def _on_http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    response = problem(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error", "see the API's log")
