"""Signed links in messages: unsubscribe and tracked clicks.

A token carries what the API needs to record the customer's action without a
lookup (trigger, rule, customer, channel and, for a click, the target URL),
as base64url JSON followed by an HMAC-SHA256 of it with ``link_secret``. The
API verifies the signature before it writes an event: nobody can unsubscribe
or click on someone else's behalf by editing a link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec


class LinkClaims(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger_id: str
    rule_id: str
    customer_id: str
    channel: str
    url: str | None = None  # the click's target


class BadLink(ValueError):
    """A token that is malformed or not signed with this link_secret."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: LinkClaims, secret: str) -> str:
    body = _b64(msgspec.json.encode(claims))
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac[:16])}"


def verify(token: str, secret: str) -> LinkClaims:
    body, _, mac = token.partition(".")
    try:
        expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()[:16]
        if not mac or not hmac.compare_digest(_unb64(mac), expected):
            raise BadLink("signature does not match")
        return msgspec.json.decode(_unb64(body), type=LinkClaims)
    except (ValueError, msgspec.DecodeError) as exc:
        raise BadLink(str(exc)) from None
