"""E-mail over SMTP, from Jinja2 templates per template id.

A rule's ``template: abandoned-cart`` names three files in
``<templates_dir>/email/``: ``abandoned-cart.subject.j2``, ``.txt.j2`` (the
plain-text part) and, optionally, ``.html.j2`` (the HTML alternative,
autoescaped). They see the rule's payload fields by name, ``payload``,
``profile`` (the customer's served profile as the API returns it, read when
the message is sent), ``first_name`` (the payload's, else the profile's, else
""), ``recommendations`` (the payload's, else none),
``unsubscribe_url``, ``track(url)`` for tracked links and the filter
``date`` (epoch seconds to "30 November 2026"). Undefined names are
errors (StrictUndefined): a typo in a template fails the message with the
template's own error, on the dead-letter topic, rather than sending a hole.

Every message carries ``List-Unsubscribe`` (a signed one-click link, RFC 8058)
and a ``Message-ID`` made from the trigger id, the same on every attempt.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
import redis

from dispatch.channels.base import Message, Outcome
from engine.profile import decode_view, parse_view
from pulse import links
from pulse.keys import RedisKeys
from pulse.settings import Settings


class EmailChannel:
    name = "email"

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        assert settings.smtp_host is not None and settings.link_secret is not None
        self.settings = settings
        self._host = settings.smtp_host
        self._secret = settings.link_secret
        self._client = client
        self._keys = RedisKeys(settings.redis_prefix)
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(settings.templates_dir) / "email"),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._templates.filters["date"] = _date
        _name, address = email.utils.parseaddr(settings.email_from)
        self._domain = address.rpartition("@")[2] or "pulse.invalid"

    def send(self, message: Message) -> Outcome:
        to = message.recipient.get("email")
        if not to:
            return Outcome("failed", "email: the customer has no e-mail address")
        try:
            mail = self.compose(message, to)
        except jinja2.TemplateNotFound as exc:
            return Outcome("failed", f"email: no template {exc.name} in {self._where()}")
        except jinja2.TemplateError as exc:
            return Outcome("failed", f"email: template {message.template}: {exc}")
        except redis.RedisError as exc:
            return Outcome("retry", f"email: reading the profile: {exc}")
        return self._deliver(mail)

    def compose(self, message: Message, to: str) -> EmailMessage:
        context = self._context(message)
        subject = self._render(f"{message.template}.subject.j2", context).strip()
        text = self._render(f"{message.template}.txt.j2", context)
        try:
            html: str | None = self._render(f"{message.template}.html.j2", context)
        except jinja2.TemplateNotFound:
            html = None
        mail = EmailMessage()
        mail["From"] = self.settings.email_from
        mail["To"] = to
        mail["Subject"] = " ".join(subject.split())
        mail["Date"] = email.utils.formatdate(localtime=False)
        mail["Message-ID"] = f"<{message.idempotency_key}@{self._domain}>"
        mail["List-Unsubscribe"] = f"<{context['unsubscribe_url']}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail["X-Pulse-Trigger-Id"] = message.idempotency_key
        mail["X-Pulse-Rule-Id"] = message.rule_id
        mail.set_content(text)
        if html is not None:
            mail.add_alternative(html, subtype="html")
        return mail

    def _context(self, message: Message) -> dict[str, Any]:
        raw = self._client.hget(self._keys.profile(message.customer_id), "view")
        profile = parse_view(decode_view(raw)) if isinstance(raw, bytes) else {}
        claims = links.LinkClaims(
            trigger_id=message.idempotency_key,
            rule_id=message.rule_id,
            customer_id=message.customer_id,
            channel="email",
        )
        base = self.settings.public_url.rstrip("/")

        def track(url: str) -> str:
            token = links.sign(links.LinkClaims(**{**_fields(claims), "url": url}), self._secret)
            return f"{base}/v1/r/{token}"

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
            "unsubscribe_url": f"{base}/v1/u/{links.sign(claims, self._secret)}",
            "track": track,
        }

    def _render(self, name: str, context: dict[str, Any]) -> str:
        return self._templates.get_template(name).render(context)

    def _deliver(self, mail: EmailMessage) -> Outcome:
        s = self.settings
        try:
            with smtplib.SMTP(self._host, s.smtp_port, timeout=s.smtp_timeout_s) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_user:
                    smtp.login(s.smtp_user, s.smtp_password or "")
                refused = smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _text in exc.recipients.values()]
            detail = f"email: recipient refused: {_replies(exc.recipients)}"
            return Outcome("retry" if all(400 <= c < 500 for c in codes) else "failed", detail)
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            detail = f"email: SMTP {exc.smtp_code} {text}"
            return Outcome("retry" if 400 <= exc.smtp_code < 500 else "failed", detail)
        except (OSError, smtplib.SMTPException) as exc:
            return Outcome("retry", f"email: {self._host}:{s.smtp_port}: {exc}")
        if refused:
            return Outcome("failed", f"email: recipient refused: {_replies(refused)}")
        return Outcome("sent", f"email: accepted by {self._host}")

    def _where(self) -> str:
        return str(Path(self.settings.templates_dir) / "email")

    def close(self) -> None:
        self._client.close()


def _date(ts: float) -> str:
    """Epoch seconds as a date for people: 30 November 2026 (UTC)."""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%-d %B %Y")


def _fields(claims: links.LinkClaims) -> dict[str, Any]:
    return {f: getattr(claims, f) for f in claims.__struct_fields__}


def _replies(replies: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{addr} {code} {text.decode('utf-8', 'replace')}" for addr, (code, text) in replies.items()
    )
