"""Push notifications through an FCM-shaped HTTP API (Firebase Cloud Messaging
HTTP v1).

``POST {push_api_url}/v1/projects/{project_id}/messages:send`` with
``Authorization: Bearer <push_auth_token>`` and the JSON body
``{"message": {"token", "notification": {"title", "body"}, "data"}}``. The
token is the customer's ``push_token`` trait (the app's registration token);
title and body are ``<templates_dir>/push/<template>.title.j2`` and
``.body.j2``, each on one line and cut to 100 and 800 characters, so that even
in four-byte characters the message stays inside FCM's 4,096-byte limit.
``data`` holds strings only, as FCM requires: ``trigger_id``, ``rule_id`` and
``template``, so the app can report an open or a click with the trigger id
as the message id.

FCM has no idempotency key. The trigger id also goes in ``X-Idempotency-Key``
for a gateway in front of FCM that honours it, but FCM itself ignores the
header: delivering each trigger once is the dispatcher's claim in Redis, and
after a dispatcher crash mid-send the app can drop a second notification with
the same ``data.trigger_id``.

Answers classify as for every HTTP channel (dispatch/channels/http_outcome.py),
with FCM's error code in the reason: 404 ``UNREGISTERED`` (the app was
uninstalled or the token expired) and 400 ``INVALID_ARGUMENT`` are permanent,
429 and 5xx retriable after their ``Retry-After``. A circuit breaker stops
attempts while the provider keeps failing.
"""

from __future__ import annotations

import httpx
import jinja2
import orjson
import redis

from dispatch.breaker import CircuitBreaker
from dispatch.channels.base import Message, Outcome
from dispatch.channels.http_outcome import attempt, classify
from dispatch.channels.templates import MessageTemplates, one_line
from pulse.settings import Settings

MAX_TITLE = 100
MAX_BODY = 800
# What FCM's error codes mean for the person reading the dead letter.
_EXPLAINED = {
    "UNREGISTERED": "the device token is no longer registered (app uninstalled or token expired)",
}


class PushChannel:
    name = "push"

    def __init__(
        self, settings: Settings, client: redis.Redis, http: httpx.Client | None = None
    ) -> None:
        assert settings.push_api_url and settings.push_project_id and settings.push_auth_token
        self.templates = MessageTemplates(settings, client, "push")
        base = settings.push_api_url.rstrip("/")
        self._url = f"{base}/v1/projects/{settings.push_project_id}/messages:send"
        self._auth = f"Bearer {settings.push_auth_token}"
        self._timeout_s = settings.push_timeout_s
        self._http = http or httpx.Client(follow_redirects=False)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)

    def send(self, message: Message) -> Outcome:
        token = message.recipient.get("push_token")
        if not token:
            return Outcome("failed", "push: the customer has no push token (no app registered)")
        try:
            context = self.templates.context(message)
            title = self.templates.render(f"{message.template}.title.j2", context)
            body = self.templates.render(f"{message.template}.body.j2", context)
        except (jinja2.TemplateError, redis.RedisError) as exc:
            return self.templates.failure(message, exc)
        content = orjson.dumps(
            {
                "message": {
                    "token": token,
                    "notification": {
                        "title": one_line(title, MAX_TITLE),
                        "body": one_line(body, MAX_BODY),
                    },
                    "data": {
                        "trigger_id": message.idempotency_key,
                        "rule_id": message.rule_id,
                        "template": message.template,
                    },
                }
            }
        )
        headers = {
            "authorization": self._auth,
            "content-type": "application/json",
            # FCM ignores it (see above); a gateway in front of it may not.
            "x-idempotency-key": message.idempotency_key,
        }
        return attempt(
            "push",
            self.breaker,
            self._timeout_s,
            lambda: self._http.post(
                self._url, content=content, headers=headers, timeout=self._timeout_s
            ),
            classify_fcm,
        )

    def close(self) -> None:
        self._http.close()


def classify_fcm(name: str, response: httpx.Response) -> Outcome:
    """As every HTTP answer classifies, with the reason FCM gives for an error
    (``{"error": {"status", "message", "details": [{"errorCode"}]}}``) in
    place of the raw body."""
    outcome = classify(name, response)
    error = None if outcome.status == "sent" else _fcm_error(response)
    if error is None:
        return outcome
    code, text = error
    reason = _EXPLAINED.get(code, text)
    detail = f"{name}: HTTP {response.status_code} {code}" + (f": {reason}" if reason else "")
    return Outcome(outcome.status, detail, retry_after_s=outcome.retry_after_s)


def _fcm_error(response: httpx.Response) -> tuple[str, str] | None:
    """FCM's most specific error code (the FcmError detail's ``errorCode``,
    else the ``status``) and its message; None when the body is no FCM error."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("status")
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and isinstance(detail.get("errorCode"), str):
            code = detail["errorCode"]
    if not isinstance(code, str):
        return None
    text = error.get("message")
    return code, text if isinstance(text, str) else ""
