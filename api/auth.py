"""API keys with roles, as FastAPI dependencies.

Write keys may only ingest; read keys may do everything (read and ingest);
admin keys may do what read keys do, and the console's deploy and erase
buttons on top (api/console/): an action that changes what customers receive
or deletes their data asks for more than the key a dashboard is opened with.
A key is presented as the HTTP Basic user name (Segment's convention, empty
password) or as ``Authorization: Bearer <key>``; the Segment endpoints also take
the ``writeKey`` body field. With no keys configured at all the API is open
(development mode), and the app logs a warning at start-up.
"""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode
from typing import Annotated, Literal

import msgspec
from fastapi import Depends, Request, Security
from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.security.base import SecurityBase

from api import deps
from api.ingest import Collector
from api.problems import ProblemError

Role = Literal["write", "read", "admin"]

# Higher ranks may do everything lower ones may.
RANK: dict[str, int] = {"write": 0, "read": 1, "admin": 2}

CHALLENGE = 'Basic realm="pulse", Bearer realm="pulse"'


class KeyRing:
    """The configured keys; compares in constant time against every one of them."""

    def __init__(
        self,
        write_keys: tuple[str, ...],
        read_keys: tuple[str, ...],
        admin_keys: tuple[str, ...] = (),
    ) -> None:
        self._keys: list[tuple[bytes, Role]] = [(k.encode(), "admin") for k in admin_keys]
        self._keys += [(k.encode(), "read") for k in read_keys]
        self._keys += [(k.encode(), "write") for k in write_keys]

    @property
    def open(self) -> bool:
        """No keys configured: development mode, every request is allowed."""
        return not self._keys

    def role(self, key: str) -> Role | None:
        presented = key.encode("utf-8", "surrogateescape")
        found: Role | None = None
        for secret, role in self._keys:
            # No early exit: the time taken does not tell which key matched.
            if hmac.compare_digest(presented, secret) and (
                found is None or RANK[role] > RANK[found]
            ):
                found = role
        return found


class _HTTPKey(SecurityBase):
    """One HTTP authentication scheme: documented in OpenAPI, returns the key sent with it."""

    def __init__(self, scheme: Literal["basic", "bearer"], description: str) -> None:
        self.model = HTTPBaseModel(scheme=scheme, description=description)
        self.scheme_name = f"{scheme}Key"
        self.scheme = scheme

    async def __call__(self, request: Request) -> str | None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != self.scheme or not credentials.strip():
            return None
        if self.scheme == "bearer":
            return credentials.strip()
        try:
            decoded = b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized("malformed Basic credentials") from None
        user, _, password = decoded.partition(":")
        return user or password or None


basic_key = _HTTPKey("basic", "The API key as user name, empty password (Segment's convention)")
bearer_key = _HTTPKey("bearer", "Authorization: Bearer <API key>")

BasicKey = Annotated[str | None, Security(basic_key)]
BearerKey = Annotated[str | None, Security(bearer_key)]


async def keyring_of(request: Request) -> KeyRing:
    # async, like api/deps.py: a plain def would run in FastAPI's thread pool.
    value: KeyRing = request.app.state.keyring
    return value


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "unauthorized", detail, headers={"WWW-Authenticate": CHALLENGE})


def _check(keyring: KeyRing, key: str | None, needed: Role) -> None:
    if keyring.open:
        return
    if key is None:
        raise _unauthorized("an API key is required (Basic user name or Bearer token)")
    role = keyring.role(key)
    if role is None:
        raise _unauthorized("the API key is not valid")
    if RANK[role] < RANK[needed]:
        raise ProblemError(
            403, "forbidden", "this endpoint needs a read key; a write key only ingests"
        )


async def require_read(
    keyring: Annotated[KeyRing, Depends(keyring_of)], basic: BasicKey, bearer: BearerKey
) -> None:
    """Profiles, recommendations and everything else that is not ingest."""
    _check(keyring, basic or bearer, "read")


async def require_ingest(
    keyring: Annotated[KeyRing, Depends(keyring_of)], basic: BasicKey, bearer: BearerKey
) -> None:
    """Pulse's own collector: a write or a read key."""
    _check(keyring, basic or bearer, "write")


class _WriteKeyField(msgspec.Struct):
    writeKey: str | None = None


async def require_segment_ingest(
    request: Request,
    keyring: Annotated[KeyRing, Depends(keyring_of)],
    collector: Annotated[Collector, Depends(deps.collector)],
    basic: BasicKey,
    bearer: BearerKey,
) -> None:
    """Segment endpoints: as ``require_ingest``, or the ``writeKey`` field of the body."""
    key = basic or bearer
    if key is None and not keyring.open:
        body = await collector.read_body(request)
        try:
            key = msgspec.json.decode(body, type=_WriteKeyField).writeKey
        except (msgspec.ValidationError, msgspec.DecodeError):
            key = None
    _check(keyring, key, "write")
