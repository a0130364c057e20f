"""The rules pages' work: the live set, a rule's row, check, dry-run, review, deploy.

Nothing here is a second implementation: checking is engine/rules/validate.py's
``load`` (what ``pulse rules check`` and ``POST /v1/rules/validate`` run), the
dry-run is pulse/dryrun.py over the events topic (``pulse rules dry-run
--from topic``), deployments are pulse/deployments.py (``pulse rules deploy``).
What the console adds is the candidate: the live rule set with one file
replaced by the editor's text, so a marketer edits one rule and every check
sees the whole set it would go live in.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from api.console.kafka_clients import LazyConsumer
from api.console.lift import Lift, lift_of
from engine.control import RulesDeployed
from engine.rules.validate import Loaded, base_name, load, rule_set_files
from pulse.deployments import new_deployment, publish, read_deployments
from pulse.dryrun import DryRunReport, dry_run, topic_events
from pulse.rules_files import load_loyalty, rule_files
from pulse.settings import Settings

POLICY = "policy.yaml"


@dataclass(frozen=True)
class LiveSet:
    """The rule files in force: the newest deployment's, else ``rules_dir``'s."""

    files: dict[str, str]
    version: str
    deployed: RulesDeployed | None


@dataclass
class RuleRow:
    rule_id: str
    file: str
    enabled: bool
    trigger: str
    channel: str
    category: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def suppressed(self) -> list[tuple[str, int]]:
        found = [
            (k.split(":", 1)[1], v) for k, v in self.counts.items() if k.startswith("suppressed:")
        ]
        return sorted(found, key=lambda kv: -kv[1])

    @property
    def lift(self) -> Lift:
        return lift_of(self.counts)


# Errors of a partition whose leader is being chosen or moved.
_LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


class LiveRules:
    """Reads the live set; the control topic is read again only when it grew."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kafka = LazyConsumer(
            {"bootstrap.servers": settings.kafka, "group.id": "pulse-console-rules"}
        )
        self._lock = self._kafka.lock  # reads of the set, and of the consumer
        self._cached: tuple[int, LiveSet] | None = None

    def live(self) -> LiveSet:
        with self._lock:
            end = self._control_end()
            if self._cached is not None and self._cached[0] == end:
                return self._cached[1]
            history = read_deployments(self._settings) if end else []
            if history:
                newest = history[-1]
                found = LiveSet(dict(newest.files), newest.version, newest)
            else:
                files = rule_set_files(rule_files(self._settings.rules_dir))
                loaded = load(files)
                version = loaded.rules.version if loaded.rules is not None else "invalid"
                found = LiveSet(files, version, None)
            self._cached = (end, found)
            return found

    def rule_ids(self) -> list[str]:
        """The ids of the live set's rules (file names: a rule's id is its file's)."""
        return [name.removesuffix(".yaml") for name in self.live().files if name != POLICY]

    def forget(self) -> None:
        with self._lock:
            self._cached = None

    def close(self, wait_s: float = 0.5) -> None:
        self._kafka.close(wait_s)

    def _control_end(self, attempts: int = 5) -> int:
        """The control topic's end offsets, summed. A partition whose leader is
        moving (a topic just created, a broker restarting) answers "not leader"
        for a moment: asked again, a few times over about three seconds,
        rather than failing the page."""
        consumer = self._kafka.get()
        for attempt in range(1, attempts):
            try:
                return _end_offsets(consumer, self._settings.control_topic)
            except KafkaException as exc:
                if not _leader_moving(exc):
                    raise
                time.sleep(0.3 * attempt)
        return _end_offsets(consumer, self._settings.control_topic)


def _end_offsets(consumer: Consumer, topic: str) -> int:
    metadata = consumer.list_topics(topic, timeout=2).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return 0
    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1]
        for p in metadata.partitions
    )


def _leader_moving(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _LEADER_MOVING)


def rows(live: LiveSet, stats: dict[str, dict[str, int]]) -> list[RuleRow]:
    """Every rule file of the set, enabled or not, with its decision counts."""
    found = []
    for name, text in sorted(live.files.items()):
        if name == POLICY:
            continue
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        rule_id = str(data.get("id") or name.removesuffix(".yaml"))
        action = data.get("action")
        if not isinstance(action, dict):
            action = {}
        found.append(
            RuleRow(
                rule_id=rule_id,
                file=name,
                enabled=bool(data.get("enabled", True)),
                trigger=describe_trigger(data.get("trigger")),
                channel=str(action.get("channel", "-")),
                category=str(data.get("category", "marketing")),
                counts=stats.get(rule_id, {}),
            )
        )
    return found


def describe_trigger(trigger: Any) -> str:
    """``event: add_to_cart (wait 1h)``, ``inactive_for: 60d``... one line."""
    if not isinstance(trigger, dict):
        return "-"
    parts = []
    for key in ("event", "inactive_for", "attribute", "date"):
        if key in trigger:
            value = trigger[key]
            shown = " or ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{key}: {shown}")
    if "wait" in trigger:
        parts.append(f"wait {trigger['wait']}")
    return ", ".join(parts) or "-"


def candidate(live: LiveSet, name: str, text: str) -> dict[str, str]:
    """The live set with ``name`` replaced (or added) by the editor's text."""
    files = dict(live.files)
    files[base_name(name)] = text
    return files


def check(files: dict[str, str]) -> Loaded:
    """``pulse rules check`` on these files: every problem with line and column."""
    return load(files)


def diff(live: LiveSet, files: dict[str, str]) -> str:
    """A unified diff of the set against the live one, file by file."""
    out: list[str] = []
    for name in sorted(set(live.files) | set(files)):
        before, after = live.files.get(name, ""), files.get(name, "")
        if before == after:
            continue
        out += difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"live/{name}",
            tofile=f"new/{name}",
        )
    return "".join(out)


def run_dry(
    settings: Settings, files: dict[str, str], rule_id: str, window_s: float, samples: int = 5
) -> DryRunReport | Loaded:
    """The rule over the events topic; decisions in the last ``window_s`` are reported
    (earlier ones still set caps and journeys, as they did live)."""
    loaded = load(files)
    if loaded.rules is None:
        return loaded
    only = [rule_id] if rule_id in loaded.rules.by_id else []
    return dry_run(
        loaded.rules,
        topic_events(settings),
        loyalty=load_loyalty(settings.rules_dir),
        only=only,
        since=time.time() - window_s,
        samples=samples,
    )


def deploy(settings: Settings, files: dict[str, str], note: str) -> RulesDeployed | Loaded:
    """Publish the set as the next version, unless it does not check."""
    loaded = load(files)
    if loaded.rules is None:
        return loaded
    deployment = new_deployment(files, settings, note=note)
    publish(settings, deployment)
    return deployment
