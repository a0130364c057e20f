"""One frozen settings object for every Pulse process.

Settings are read once at start-up (``PULSE_*`` environment variables over an
optional TOML file over defaults), validated with readable errors, and passed
down. Nothing in Pulse reads the environment at import time.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import orjson

if TYPE_CHECKING:
    from engine.scores.labels import ScoreSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"

_SECRET_FIELDS = frozenset({"write_keys", "read_keys", "admin_keys"})
_SECRET_STRINGS = (
    "webhook_secret",
    "smtp_password",
    "link_secret",
    "sms_auth_token",
    "push_auth_token",
)


class SettingsError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


class WebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One webhook receiver. ``secret`` is ``whsec_`` and base64 of 24 to 64 random
    bytes (Standard Webhooks); each endpoint has its own."""

    url: str
    secret: str
    timeout_s: float = 5.0


def check_webhook_secret(secret: str) -> str | None:
    """What is wrong with a Standard Webhooks secret, or None."""
    if not secret.startswith("whsec_"):
        return "must start with whsec_ (Standard Webhooks secret format)"
    try:
        raw = base64.b64decode(secret[len("whsec_") :] + "==", validate=False)
    except ValueError:
        return "is not base64 after whsec_"
    if not 24 <= len(raw) <= 64:
        return f"must hold 24 to 64 bytes after whsec_, holds {len(raw)}"
    return None


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Effective configuration. See the configuration table in README.md."""

    # Services. None means "Pulse runs its own local server on loopback";
    # a value points Pulse at an existing server and nothing is started.
    kafka_bootstrap: str | None = None
    redis_url: str | None = None

    # Naming: every topic is "<topic_prefix>.<name>", every Redis key starts
    # with "<redis_prefix>:". Tests use unique prefixes to isolate themselves.
    topic_prefix: str = "pulse"
    redis_prefix: str = "pulse"
    partitions: int = 4
    consumer_group_prefix: str = "pulse"

    # Dataflow.
    recovery_dir: str | None = None
    snapshot_interval_s: float = 5.0
    workers: int = 1
    start_from: Literal["earliest", "latest"] = "earliest"
    # Kafka connectors of the dataflow: "own" (dataflows/kafka_source.py and
    # kafka_sink.py: one consumer per worker, no flush per batch) or Bytewax's
    # "stock" ones (kept to compare against in benchmarks/latency.py).
    kafka_connectors: Literal["own", "stock"] = "own"

    # A repeated event id within this window (event time) is dropped and counted.
    dedup_window_s: float = 86400.0

    # Scores (docs/scores.md): learned online by the dataflow, served in the
    # profile. Horizons in days: an order within propensity_days; no order
    # within churn_days; net spend within clv_days.
    scores: bool = True
    propensity_days: float = 7.0
    churn_days: float = 90.0
    clv_days: float = 365.0

    # Marketers' files: trigger rules, policy.yaml, loyalty.yaml, rfm.yaml,
    # actions.yaml (next-best-action, docs/next-best-action.md).
    rules_dir: str = str(PROJECT_ROOT / "rules")
    # A deployed rule version applies to events this long after `pulse rules
    # deploy` published it, so every worker has it before the stream gets there.
    rules_activation_s: float = 2.0
    # Next-best-action policies: customers are split over this many (hash of
    # the customer id), each learning from its share; 1: one policy learns
    # from everyone (docs/next-best-action.md, "Policy state and workers").
    nba_shards: int = 1
    # Events may arrive this much out of time order within a partition; pending
    # rule actions fire once the stream is this far past their due time.
    event_lateness_s: float = 2.0

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_body_bytes: int = 1_048_576
    # How long the collector waits for Kafka's acknowledgement before a 503.
    ack_timeout_s: float = 5.0
    write_keys: tuple[str, ...] = ()
    read_keys: tuple[str, ...] = ()
    # Everything a read key may do, and the console's deploy and erase buttons.
    admin_keys: tuple[str, ...] = ()

    # Dispatcher. "log": every trigger as a JSON line on stdout, whatever its
    # channel (development, the demo's console). "routed": each trigger to its
    # own channel; one with no configured channel goes to the dead-letter topic.
    dispatch_channel: Literal["log", "routed"] = "log"
    # Attempts per trigger for retriable failures, with full-jitter exponential
    # backoff from dispatch_backoff_s up to dispatch_backoff_max_s between them.
    dispatch_max_attempts: int = 6
    dispatch_backoff_s: float = 0.2
    dispatch_backoff_max_s: float = 30.0
    # How long a dispatcher's claim on a trigger it is sending lasts (extended
    # before each retry by its backoff): after a crash, the trigger is sent again once it
    # runs out; longer than any single attempt.
    dispatch_lease_s: float = 30.0
    # Sends under way at once in one dispatcher (each on its own thread and
    # HTTP connection, hence at most 100); a customer's triggers still go one
    # after the other, in the order read.
    dispatch_concurrency: int = 32
    # Prometheus metrics of each dispatcher on this port (0: none), at api_host.
    dispatch_metrics_port: int = 0
    # Prometheus metrics of each dataflow process on this port (0: none), at
    # api_host; process i of a cluster on this port + i.
    flow_metrics_port: int = 0
    # E-mail over SMTP (the email channel is on when smtp_host is set).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 10.0
    email_from: str = "Pulse <pulse@localhost>"
    # SMS through a Twilio-shaped API (the sms channel is on when sms_api_url is set).
    sms_api_url: str | None = None
    sms_account_sid: str | None = None
    sms_auth_token: str | None = None
    sms_from: str | None = None
    sms_timeout_s: float = 5.0
    # Push through an FCM-shaped HTTP v1 API (the push channel is on when
    # push_api_url is set); push_auth_token is sent as the bearer token as is.
    push_api_url: str | None = None
    push_project_id: str | None = None
    push_auth_token: str | None = None
    push_timeout_s: float = 5.0
    # Message templates: <templates_dir>/email/<template>.subject.j2, .txt.j2, .html.j2.
    templates_dir: str = str(PROJECT_ROOT / "templates")
    # Links in messages (unsubscribe, tracked clicks) point at this API address
    # and are signed with link_secret (needed by the email channel).
    public_url: str = "http://127.0.0.1:8000"
    link_secret: str | None = None
    # A circuit per endpoint opens after this many retriable failures in a row
    # and lets one trial through after breaker_reset_s.
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    # Webhooks: the default endpoint, and named ones (a trigger whose template
    # names an endpoint goes there; TOML table or JSON in PULSE_WEBHOOK_ENDPOINTS).
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_timeout_s: float = 5.0
    webhook_endpoints: dict[str, WebhookEndpoint] = msgspec.field(default_factory=dict)

    # Local services.
    cache_dir: str = str(PROJECT_ROOT / ".cache")
    # Ports of the servers Pulse runs itself (the Kafka controller uses port + 1).
    local_kafka_port: int = 9092
    local_redis_port: int = 6379
    redis_persistence: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def __post_init__(self) -> None:
        for name in (
            "partitions",
            "workers",
            "api_port",
            "smtp_port",
            "max_body_bytes",
            "local_kafka_port",
            "local_redis_port",
            "dispatch_max_attempts",
            "breaker_failures",
            "nba_shards",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in (
            "snapshot_interval_s",
            "ack_timeout_s",
            "dedup_window_s",
            "dispatch_backoff_s",
            "breaker_reset_s",
            "webhook_timeout_s",
            "smtp_timeout_s",
            "sms_timeout_s",
            "push_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("rules_activation_s", "event_lateness_s"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name}: must not be negative, got {getattr(self, name)}")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError(
                f"redis_url: must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
            )
        longest = max(
            [
                self.webhook_timeout_s if self.webhook_url else 0.0,
                self.smtp_timeout_s if self.smtp_host else 0.0,
                self.sms_timeout_s if self.sms_api_url else 0.0,
                self.push_timeout_s if self.push_api_url else 0.0,
                *(e.timeout_s for e in self.webhook_endpoints.values()),
            ]
        )
        if self.dispatch_lease_s <= longest:
            raise SettingsError(
                f"dispatch_lease_s: must be longer than the longest channel timeout ({longest:g} s)"
            )
        if self.sms_api_url is not None:
            for name in ("sms_account_sid", "sms_auth_token", "sms_from"):
                if not getattr(self, name):
                    raise SettingsError(f"{name}: needed with sms_api_url")
            if not self.link_secret:
                raise SettingsError(
                    "link_secret: needed with sms_api_url: messages carry signed links"
                )
        if self.push_api_url is not None:
            for name in ("push_project_id", "push_auth_token"):
                if not getattr(self, name):
                    raise SettingsError(f"{name}: needed with push_api_url")
            if not self.link_secret:
                raise SettingsError(
                    "link_secret: needed with push_api_url: messages carry signed links"
                )
        if self.smtp_host is not None and not self.link_secret:
            raise SettingsError(
                "link_secret: needed with smtp_host: every e-mail carries a signed unsubscribe link"
            )
        if self.link_secret is not None and len(self.link_secret) < 16:
            raise SettingsError("link_secret: at least 16 characters")
        if not 1 <= self.dispatch_concurrency <= 100:
            raise SettingsError(
                f"dispatch_concurrency: must be from 1 to 100, got {self.dispatch_concurrency}"
            )
        if not 0 <= self.dispatch_metrics_port <= 65535:
            raise SettingsError("dispatch_metrics_port: must be 0 (off) or a TCP port")
        if not 0 <= self.flow_metrics_port <= 65535:
            raise SettingsError("flow_metrics_port: must be 0 (off) or a TCP port")
        if self.dispatch_backoff_max_s < self.dispatch_backoff_s:
            raise SettingsError("dispatch_backoff_max_s: must be at least dispatch_backoff_s")
        if (self.webhook_url is None) != (self.webhook_secret is None):
            raise SettingsError(
                "webhook_secret: webhook_url and webhook_secret go together (every "
                "webhook is signed)"
            )
        if self.webhook_secret is not None and (
            problem := check_webhook_secret(self.webhook_secret)
        ):
            raise SettingsError(f"webhook_secret: {problem}")
        for endpoint, spec in self.webhook_endpoints.items():
            if problem := check_webhook_secret(spec.secret):
                raise SettingsError(f"webhook_endpoints: {endpoint}: secret {problem}")
            if not spec.url.startswith(("http://", "https://")):
                raise SettingsError(f"webhook_endpoints: {endpoint}: url must be http(s)")
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            raise SettingsError("webhook_url: must start with http:// or https://")
        for name in ("propensity_days", "churn_days", "clv_days"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name}: must be more than 0 days")
        for name in ("topic_prefix", "redis_prefix"):
            value = getattr(self, name)
            if not value or any(c in value for c in " :{}"):
                raise SettingsError(f"{name}: must be non-empty without spaces, ':', '{{' or '}}'")

    # Derived names -------------------------------------------------------

    def score_settings(self) -> ScoreSettings:
        """The scores' horizons (engine/scores/labels.py)."""
        from engine.scores.labels import ScoreSettings  # imports River: only when asked

        return ScoreSettings(
            propensity_days=self.propensity_days,
            churn_days=self.churn_days,
            clv_days=self.clv_days,
        )

    @property
    def kafka_managed(self) -> bool:
        """True when Pulse starts and owns the local broker."""
        return self.kafka_bootstrap is None

    @property
    def redis_managed(self) -> bool:
        return self.redis_url is None

    @property
    def kafka(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.local_kafka_port}"

    @property
    def redis(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.local_redis_port}/0"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def events_topic(self) -> str:
        return self.topic("events")

    @property
    def events_dlq_topic(self) -> str:
        return self.topic("events.dlq")

    @property
    def triggers_topic(self) -> str:
        return self.topic("triggers")

    @property
    def triggers_dlq_topic(self) -> str:
        return self.topic("triggers.dlq")

    @property
    def control_topic(self) -> str:
        return self.topic("control")

    @property
    def decisions_topic(self) -> str:
        return self.topic("decisions")

    @property
    def nba_topic(self) -> str:
        """Next-best-action decisions and outcomes, as they are made and settled."""
        return self.topic("nba")

    @property
    def all_topics(self) -> tuple[str, ...]:
        return (
            self.events_topic,
            self.events_dlq_topic,
            self.triggers_topic,
            self.triggers_dlq_topic,
            self.control_topic,
            self.decisions_topic,
            self.nba_topic,
        )

    @property
    def effective_recovery_dir(self) -> Path:
        if self.recovery_dir:
            return Path(self.recovery_dir)
        return Path(self.cache_dir) / "recovery" / self.topic_prefix

    def as_environ(self) -> dict[str, str]:
        """These settings as PULSE_* variables, so a child process runs with exactly them."""
        out = {}
        for key, value in msgspec.to_builtins(self).items():
            if value is None:
                continue
            if key in _JSON_FIELDS:
                if value:
                    out[f"PULSE_{key.upper()}"] = orjson.dumps(value).decode()
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, list | tuple):
                value = ",".join(value)
            out[f"PULSE_{key.upper()}"] = str(value)
        return out

    def masked(self) -> dict[str, Any]:
        """Settings as a dict with secrets replaced, for printing and logs."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        for name in _SECRET_FIELDS:
            out[name] = [_mask(k) for k in out[name]]
        for name in _SECRET_STRINGS:
            if out.get(name):
                out[name] = _mask(out[name])
        for spec in out["webhook_endpoints"].values():
            spec["secret"] = _mask(spec["secret"])
        if self.redis_url and "@" in self.redis_url:
            scheme, rest = self.redis_url.split("://", 1)
            out["redis_url"] = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return out


def _mask(secret: str) -> str:
    return secret[:4] + "***" if len(secret) > 8 else "***"


_LOCATED = re.compile(r" - at `\$\.([a-z_]+)[^`]*`$")
_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}
_TUPLE_FIELDS = frozenset({"write_keys", "read_keys", "admin_keys"})
_JSON_FIELDS = frozenset({"webhook_endpoints"})


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults < TOML file < PULSE_* environment < overrides.

    The TOML file is ``config_file`` or ``$PULSE_CONFIG``; errors name the source
    (file or variable) and the field.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source: dict[str, str] = {}

    path = config_file or env.get("PULSE_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
        data = data.get("pulse", data)
        for key, value in data.items():
            if key not in _FIELDS:
                raise SettingsError(f"config file {path}: unknown setting {key!r}")
            raw[key] = value
            source[key] = f"config file {path}"

    for name, value in env.items():
        if not name.startswith("PULSE_") or name == "PULSE_CONFIG":
            continue
        key = name[len("PULSE_") :].lower()
        if key not in _FIELDS:
            continue  # other tools may share the prefix; unknown fields are not ours
        raw[key] = _parse_env_value(key, value)
        source[key] = name

    for key, value in overrides.items():
        if value is None:
            continue
        if key not in _FIELDS:
            raise SettingsError(f"{key} (from option {key}): unknown setting")
        raw[key] = value
        source[key] = f"option {key}"

    try:
        return msgspec.convert(raw, Settings, strict=False)
    except SettingsError:
        raise
    except msgspec.ValidationError as exc:
        message = str(exc)
        located = _LOCATED.search(message)
        if located:  # a type or constraint error: "... - at `$.field`"
            field, message = located.group(1), message[: located.start()]
        else:  # raised by __post_init__ as "<field>: <reason>"
            field, _, message = message.partition(": ")
        where = source.get(field, "default")
        raise SettingsError(f"{field} (from {where}): {message}") from None


def _parse_env_value(key: str, value: str) -> Any:
    if key in _JSON_FIELDS:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise SettingsError(f"{key} (from PULSE_{key.upper()}): not JSON: {exc}") from None
    if key in _TUPLE_FIELDS:
        return [part.strip() for part in value.split(",") if part.strip()]
    if value == "" and key in {
        "kafka_bootstrap",
        "redis_url",
        "recovery_dir",
        "webhook_url",
        "webhook_secret",
        "smtp_host",
        "smtp_user",
        "smtp_password",
        "link_secret",
        "sms_api_url",
        "sms_account_sid",
        "sms_auth_token",
        "sms_from",
        "push_api_url",
        "push_project_id",
        "push_auth_token",
    }:
        return None
    return value
