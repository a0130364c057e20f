"""Message templates (Jinja2) and what they see, shared by the channels that
render text: e-mail, SMS and push.

``<templates_dir>/<channel>/<template>...j2``; templates see the rule's payload
fields by name, ``payload``, ``profile`` (the served profile, read when the
message is sent), ``first_name`` (the payload's, else the profile's, else
""), ``recommendations`` (the payload's, else none), ``unsubscribe_url``,
``track(url)`` for signed tracked links and the ``date`` filter. Undefined
names are errors (StrictUndefined): a typo fails the message with Jinja2's
reason instead of sending a hole.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
import redis

from dispatch.channels.base import Message, Outcome
from engine.profile import decode_view, parse_view
from pulse import links
from pulse.keys import RedisKeys
from pulse.settings import Settings


class MessageTemplates:
    def __init__(self, settings: Settings, client: redis.Redis, channel: str) -> None:
        assert settings.link_secret is not None
        self.channel = channel
        self.where = Path(settings.templates_dir) / channel
        self._secret = settings.link_secret
        self._base = settings.public_url.rstrip("/")
        self._client = client
        self._keys = RedisKeys(settings.redis_prefix)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.where),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._env.filters["date"] = _date

    def render(self, name: str, context: dict[str, Any]) -> str:
        return self._env.get_template(name).render(context)

    def context(self, message: Message) -> dict[str, Any]:
        """What a template of this message sees (reads the profile from Redis)."""
        raw = self._client.hget(self._keys.profile(message.customer_id), "view")
        profile = parse_view(decode_view(raw)) if isinstance(raw, bytes) else {}
        claims = links.LinkClaims(
            trigger_id=message.idempotency_key,
            rule_id=message.rule_id,
            customer_id=message.customer_id,
            channel=self.channel,
        )

        def track(url: str) -> str:
            token = links.sign(
                links.LinkClaims(
                    trigger_id=claims.trigger_id,
                    rule_id=claims.rule_id,
                    customer_id=claims.customer_id,
                    channel=claims.channel,
                    url=url,
                ),
                self._secret,
            )
            return f"{self._base}/v1/r/{token}"

        recommendations = message.payload.get("recommendations")
        traits = profile.get("traits") or {}
        return {
            "first_name": traits.get("first_name") or "",
            **message.payload,
            "payload": message.payload,
            "profile": profile,
            "recommendations": recommendations if isinstance(recommendations, list) else [],
            "customer_id": message.customer_id,
            "rule_id": message.rule_id,
            "unsubscribe_url": f"{self._base}/v1/u/{links.sign(claims, self._secret)}",
            "track": track,
        }

    def failure(self, message: Message, exc: Exception) -> Outcome:
        """What a rendering error means for the message: a missing or broken
        template is permanent (it fails the same way on every attempt), an
        unreachable Redis is worth another attempt."""
        name = self.channel
        if isinstance(exc, jinja2.TemplateNotFound):
            return Outcome("failed", f"{name}: no template {exc.name} in {self.where}")
        if isinstance(exc, jinja2.TemplateError):
            return Outcome("failed", f"{name}: template {message.template}: {exc}")
        return Outcome("retry", f"{name}: reading the profile: {exc}")


def one_line(text: str, limit: int) -> str:
    """Rendered text on one line (runs of white space become one space), cut
    with an ellipsis to at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _date(ts: float) -> str:
    """Epoch seconds as a date for people: 30 November 2026 (UTC)."""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%-d %B %Y")
