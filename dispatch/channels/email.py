"""E-mail over SMTP, from Jinja2 templates per template id.

A rule's ``template: abandoned-cart`` names three files in
``<templates_dir>/email/``: ``abandoned-cart.subject.j2``, ``.txt.j2`` (the
plain-text part) and, optionally, ``.html.j2`` (the HTML alternative,
autoescaped); what they see is in dispatch/channels/templates.py.

Every message carries ``List-Unsubscribe`` (a signed one-click link, RFC 8058)
and a ``Message-ID`` made from the trigger id, the same on every attempt.
"""

from __future__ import annotations

import email.utils
import smtplib
from email.message import EmailMessage

import jinja2
import redis

from dispatch.channels.base import Message, Outcome
from dispatch.channels.templates import MessageTemplates
from pulse.settings import Settings


class EmailChannel:
    name = "email"

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        assert settings.smtp_host is not None
        self.settings = settings
        self._host = settings.smtp_host
        self.templates = MessageTemplates(settings, client, "email")
        _name, address = email.utils.parseaddr(settings.email_from)
        self._domain = address.rpartition("@")[2] or "pulse.invalid"

    def send(self, message: Message) -> Outcome:
        to = message.recipient.get("email")
        if not to:
            return Outcome("failed", "email: the customer has no e-mail address")
        try:
            mail = self.compose(message, to)
        except (jinja2.TemplateError, redis.RedisError) as exc:
            return self.templates.failure(message, exc)
        return self._deliver(mail)

    def compose(self, message: Message, to: str) -> EmailMessage:
        context = self.templates.context(message)
        render = self.templates.render
        subject = render(f"{message.template}.subject.j2", context).strip()
        text = render(f"{message.template}.txt.j2", context)
        try:
            html: str | None = render(f"{message.template}.html.j2", context)
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

    def close(self) -> None:
        # One connection per message, so the dispatcher's threads share no
        # SMTP session (smtplib's are not thread-safe); the Redis client is the
        # dispatcher's.
        pass


def _replies(replies: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{addr} {code} {text.decode('utf-8', 'replace')}" for addr, (code, text) in replies.items()
    )
