"""Delivery channels behind one protocol (``base.Channel``), and which one a
dispatcher uses for a trigger."""

from __future__ import annotations

from collections.abc import Mapping

import redis

from dispatch.channels.base import Channel, Message, Outcome, Status
from dispatch.channels.email import EmailChannel
from dispatch.channels.inbox import InboxChannel
from dispatch.channels.log import LogChannel
from dispatch.channels.push import PushChannel
from dispatch.channels.sms import SmsChannel
from dispatch.channels.webhook import WebhookChannel
from pulse.keys import RedisKeys
from pulse.settings import Settings, WebhookEndpoint

__all__ = [
    "Channel",
    "EmailChannel",
    "InboxChannel",
    "LogChannel",
    "Message",
    "Outcome",
    "PushChannel",
    "Router",
    "SmsChannel",
    "Status",
    "WebhookChannel",
    "build_channel",
]


class Router:
    """Each message to the channel its rule chose. A channel this dispatcher
    has no configuration for is a permanent failure with the reason, not a
    silent drop: the trigger lands on the dead-letter topic, to be re-driven
    once the channel is configured."""

    name = "routed"

    def __init__(self, channels: Mapping[str, Channel]) -> None:
        self.channels = dict(channels)

    def channel_for(self, message: Message) -> Channel | None:
        return self.channels.get(message.channel)

    def send(self, message: Message) -> Outcome:
        channel = self.channel_for(message)
        if channel is None:
            configured = ", ".join(sorted(self.channels)) or "none"
            return Outcome(
                "failed",
                f"no {message.channel} channel is configured in this dispatcher "
                f"(configured: {configured})",
            )
        return channel.send(message)

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def webhook_endpoints(settings: Settings) -> dict[str, WebhookEndpoint]:
    endpoints = dict(settings.webhook_endpoints)
    if settings.webhook_url is not None and settings.webhook_secret is not None:
        endpoints.setdefault(
            "default",
            WebhookEndpoint(
                url=settings.webhook_url,
                secret=settings.webhook_secret,
                timeout_s=settings.webhook_timeout_s,
            ),
        )
    return endpoints


def build_channel(settings: Settings, client: redis.Redis) -> Channel:
    """The dispatcher's channel for its settings (``dispatch_channel``); the
    channels that read or write Redis share the dispatcher's ``client``."""
    if settings.dispatch_channel == "log":
        return LogChannel()
    channels: dict[str, Channel] = {
        "in_app": InboxChannel(client, RedisKeys(settings.redis_prefix))
    }
    if settings.smtp_host is not None:
        channels["email"] = EmailChannel(settings, client)
    if settings.sms_api_url is not None:
        channels["sms"] = SmsChannel(settings, client)
    if settings.push_api_url is not None:
        channels["push"] = PushChannel(settings, client)
    endpoints = webhook_endpoints(settings)
    if endpoints:
        channels["webhook"] = WebhookChannel(
            endpoints, settings.breaker_failures, settings.breaker_reset_s
        )
    return Router(channels)
