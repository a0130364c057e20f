"""Console sign-in: the API's own keys, presented once, kept as a signed cookie.

A browser cannot send ``Authorization`` on a link or a form, so the console
asks for the key once and answers with an HttpOnly, SameSite=Strict cookie
holding a token that names the key's role and an expiry, signed with HMAC.
The key itself never goes into the cookie. The signing secret is derived from
the configured keys, so every API process with the same keys accepts the same
sessions, and changing the keys signs everyone out.

CSRF: every form POST carries a synchronizer token derived from the session
token (HMAC of it under the same secret). A page of another site can make the
browser send the cookie (not with SameSite=Strict, but older browsers), never
read the token, so a POST without it is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from api.auth import RANK, KeyRing, Role

COOKIE = "pulse_console"
SESSION_S = 8 * 3600  # a working day; then the key is asked for again


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the role of the key signed in with (admin, read), or the
    open console of a development API with no keys."""

    role: Role
    open: bool = False
    token: str = ""

    def may(self, needed: Role) -> bool:
        return self.open or RANK[self.role] >= RANK[needed]


class Sessions:
    """Signs and checks session tokens and their CSRF tokens."""

    def __init__(self, keyring: KeyRing, keys: tuple[str, ...]) -> None:
        self._keyring = keyring
        material = "\x1f".join(sorted(keys)).encode()
        self._secret = hashlib.sha256(b"pulse-console-session\x1f" + material).digest()
        if keyring.open:
            # No keys to derive from: a secret of this process, so the CSRF
            # token cannot be computed from the source code.
            self._secret = secrets.token_bytes(32)

    @property
    def open(self) -> bool:
        return self._keyring.open

    def role_of(self, key: str) -> Role | None:
        return self._keyring.role(key.strip())

    def sign_in(self, key: str, now: float | None = None) -> str | None:
        """A session token for this key, or None when it is not a viewing key."""
        role = self._keyring.role(key.strip())
        if role is None or RANK[role] < RANK["read"]:
            return None
        expires = int((time.time() if now is None else now) + SESSION_S)
        body = f"{role}.{expires}"
        return f"{body}.{self._mac(body)}"

    def viewer(self, token: str | None, now: float | None = None) -> Viewer | None:
        """The viewer a cookie names, or None (no cookie, forged, expired)."""
        if self.open:
            return Viewer("admin", open=True)
        if not token or token.count(".") != 2:
            return None
        role, expires, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(f"{role}.{expires}")):
            return None
        if role not in RANK or not expires.isdigit():
            return None
        if int(expires) < (time.time() if now is None else now):
            return None
        return Viewer(role, token=token)  # type: ignore[arg-type]

    def csrf(self, viewer: Viewer) -> str:
        """The token every form of this session sends back."""
        return self._mac(f"csrf\x1f{viewer.token}")

    def csrf_ok(self, viewer: Viewer, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf(viewer))

    def _mac(self, text: str) -> str:
        digest = hmac.new(self._secret, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
