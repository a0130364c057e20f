"""RFC 9457 problem responses that name the bad field and why."""

from __future__ import annotations

import re
from typing import Any

from fastapi.responses import JSONResponse

_FIELD = re.compile(r" - at `\$((?:\.[A-Za-z_0-9]+|\[\d+\])*)`$")


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
