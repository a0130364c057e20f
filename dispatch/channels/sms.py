"""SMS through a Twilio-shaped HTTP API.

``POST {sms_api_url}/2010-04-01/Accounts/{sid}/Messages.json`` with the form
fields ``To``, ``From`` and ``Body``, HTTP basic auth (account SID and auth
token) and the trigger id in ``I-Twilio-Idempotency-Token``, so a repeated
attempt is not a second text. The body is ``<templates_dir>/sms/<template>.txt.j2``
on one line, at most 1,600 characters (the provider's limit). Answers
classify as for every HTTP channel (dispatch/channels/http_outcome.py), and a
circuit breaker stops attempts while the provider keeps failing.
"""

from __future__ import annotations

import httpx
import jinja2
import redis

from dispatch.breaker import CircuitBreaker
from dispatch.channels.base import Message, Outcome
from dispatch.channels.http_outcome import attempt
from dispatch.channels.templates import MessageTemplates, one_line
from pulse.settings import Settings

MAX_BODY = 1600


class SmsChannel:
    name = "sms"

    def __init__(
        self, settings: Settings, client: redis.Redis, http: httpx.Client | None = None
    ) -> None:
        assert settings.sms_api_url and settings.sms_account_sid and settings.sms_auth_token
        self.templates = MessageTemplates(settings, client, "sms")
        sid = settings.sms_account_sid
        self._url = f"{settings.sms_api_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        self._auth = (sid, settings.sms_auth_token)
        self._from = settings.sms_from or ""
        self._timeout_s = settings.sms_timeout_s
        self._http = http or httpx.Client(follow_redirects=False)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)

    def send(self, message: Message) -> Outcome:
        to = message.recipient.get("phone")
        if not to:
            return Outcome("failed", "sms: the customer has no phone number")
        try:
            text = self.templates.render(
                f"{message.template}.txt.j2", self.templates.context(message)
            )
        except (jinja2.TemplateError, redis.RedisError) as exc:
            return self.templates.failure(message, exc)
        body = one_line(text, MAX_BODY)
        return attempt(
            "sms",
            self.breaker,
            self._timeout_s,
            lambda: self._http.post(
                self._url,
                data={"To": to, "From": self._from, "Body": body},
                auth=self._auth,
                headers={"I-Twilio-Idempotency-Token": message.idempotency_key},
                timeout=self._timeout_s,
            ),
        )

    def close(self) -> None:
        self._http.close()
