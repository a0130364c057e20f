"""The personalization dataflow; steps follow the flow drawn in DESIGN.md.

    events_in -> decode -> (bad -> events_dlq) ; positions -> Redis (pulse status)
      stamp (partition watermark, for the stream clock)
      anonymous-only events, links ---> key_by_anonymous_id -> resolve_identity --+
      events with a customer id --------------------------------------------------+
    control_in -> decode_control -> erasures (customer and anonymous ids) --------+
                  (rule deployments: read by every process, dataflows/rule_registry.py)
                                                                                  v
      key_by_customer -> customer_state -> profile + segments -> Redis
                                        -> triggers -> <prefix>.triggers
                                        -> decisions -> <prefix>.decisions
                                                     -> key_by_rule -> rule_stats -> Redis
                                        -> item signals -> key_by_item -> item_popularity -> Redis

Run it with ``pulse run`` (which adds recovery and cluster options).
"""

from __future__ import annotations

from functools import partial
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows.caught_up import CaughtUpReports
from dataflows.customer_step import (
    AnonymousInput,
    AnonymousLogic,
    AnonymousOutput,
    CustomerLogic,
    Stamped,
)
from dataflows.item_sink import RedisItemSink
from dataflows.kafka_io import (
    Decoded,
    FlowLayout,
    control_source,
    dead_letter_message,
    decision_message,
    decode,
    decode_control_record,
    events_source,
    kafka_output,
    trigger_message,
)
from dataflows.progress_sink import Position, RedisProgressSink
from dataflows.redis_sink import ProfileWrite, RedisProfileSink
from dataflows.rule_stats import RedisRuleStatsSink, count
from dataflows.stream_clock import PartitionTime, StreamClock
from engine.customer import (
    Effect,
    Engine,
    ProfileChanged,
    ProfileRemoved,
    SegmentsChanged,
    TriggerFired,
)
from engine.decode import DeadLetter
from engine.events import BaseEvent
from engine.identity import Link, ToCustomer, erasure_inputs, link_of
from engine.popularity import ItemSignal, ItemState, apply_signal
from engine.privacy import EraseAnonymous, EraseCustomer
from engine.triggers import Decision
from pulse.keys import RedisKeys
from pulse.settings import Settings

V = TypeVar("V")


def build_flow(
    settings: Settings,
    engine: Engine,
    clock: StreamClock,
    partition_time: PartitionTime,
    flow_id: str = "pulse",
    layout: FlowLayout | None = None,
) -> Dataflow:
    """The flow around an engine (rules and loyalty loaded by the caller, see
    dataflows/run.py) and the process's stream clock; ``layout``: how many
    workers the flow has in all (one by default) and where its stateful steps
    note when they want to wake (the stream clock's)."""
    keys = RedisKeys(settings.redis_prefix)
    layout = layout or FlowLayout(wakeups=clock.wakeups)

    flow = Dataflow(flow_id)
    reports = CaughtUpReports(settings.redis, keys)
    raw = op.input("events_in", flow, events_source(settings, reports, partition_time, layout))
    decoded = op.map("decode", raw, decode)
    positions = op.filter_map("positions", decoded, _position)
    op.output("progress_out", positions, RedisProgressSink(settings.redis, keys))
    split = op.branch("split_bad", decoded, lambda d: not isinstance(d.item, DeadLetter))

    dead = op.map("dead_letter", split.falses, partial(dead_letter_message, settings))
    kafka_output(settings, layout, "events_dlq", dead)

    events = op.map("stamp", split.trues, partial(_stamped, partition_time))
    # Identity (engine/identity.py): events with a customer id go straight to
    # the customer; anonymous-only events, and links from events carrying both
    # ids, pass the anonymous id's state (alias or anonymous profile) first.
    known = op.branch("has_customer_id", events, lambda e: e.item.customer_id is not None)
    direct = op.map("known_customer", known.trues, _to_customer)
    links = op.filter_map("links", known.trues, _link)

    # Control messages (erasures) take effect at one point of the stream.
    control = op.map(
        "decode_control",
        op.input("control_in", flow, control_source(settings, layout)),
        decode_control_record,
    )
    control_split = op.branch(
        "split_bad_control", control, lambda d: not isinstance(d.item, DeadLetter)
    )
    kafka_output(
        settings,
        layout,
        "control_dlq",
        op.map("control_dead_letter", control_split.falses, partial(dead_letter_message, settings)),
    )
    erasures = op.flat_map("erasure_inputs", control_split.trues, _erasure_inputs)
    # (Rule deployments on the same topic are read by every process's rule
    # registry instead: every worker needs every version.)
    erase_split = op.branch("erase_where", erasures, lambda e: isinstance(e.item, ToCustomer))
    erase_customers = op.filter_map("erase_customer", erase_split.trues, _forwarded)
    erase_anonymous = op.filter_map("erase_anonymous", erase_split.falses, _erase_anonymous)

    to_anon: Stream[Stamped[AnonymousInput]] = op.merge(
        "to_anonymous", known.falses, links, erase_anonymous
    )
    anon_keyed_out = op.stateful(
        "resolve_identity",
        op.key_on("key_by_anonymous_id", to_anon, lambda e: str(e.item.anonymous_id)),
        lambda state: AnonymousLogic(engine, clock, state),
    )
    anon_out = op.map("unkey_identity", anon_keyed_out, _value)
    forwarded = op.filter_map("linked_to_customer", anon_out, _forwarded)
    anon_effects = op.filter_map("anonymous_effects", anon_out, _effect)

    to_customers: Stream[Stamped[ToCustomer]] = op.merge(
        "to_customers", direct, forwarded, erase_customers
    )
    keyed = op.key_on("key_by_customer", to_customers, lambda t: t.item.customer_id)
    keyed_effects = op.stateful(
        "customer_state", keyed, lambda state: CustomerLogic(engine, clock, state)
    )
    customer_effects = op.map("unkey_effects", keyed_effects, _value)
    effects: Stream[Effect] = op.merge("all_effects", anon_effects, customer_effects)

    profiles: Stream[ProfileWrite] = op.filter_map("profile", effects, _profile_write)
    op.output("profiles_out", profiles, RedisProfileSink(settings.redis, keys))

    triggers = op.filter_map(
        "triggers", effects, lambda e: e.trigger if isinstance(e, TriggerFired) else None
    )
    kafka_output(
        settings,
        layout,
        "triggers_out",
        op.map("trigger_record", triggers, partial(trigger_message, settings)),
    )

    decisions = op.filter_map(
        "decisions", effects, lambda e: e if isinstance(e, Decision) else None
    )
    kafka_output(
        settings,
        layout,
        "decisions_out",
        op.map("decision_record", decisions, partial(decision_message, settings)),
    )
    by_rule = op.key_on("key_by_rule", decisions, lambda d: d.rule_id)
    rule_counts = op.key_rm("unkey_rules", op.stateful_map("rule_stats", by_rule, count))
    op.output("rule_stats_out", rule_counts, RedisRuleStatsSink(settings.redis, keys))

    signals = op.filter_map("item_signals", effects, _signal)
    by_item = op.key_on("key_by_item", signals, lambda s: s.sku)
    items = op.stateful_map("item_popularity", by_item, _item_popularity)
    op.output("items_out", op.key_rm("unkey_items", items), RedisItemSink(settings.redis, keys))
    return flow


def _position(decoded: Decoded) -> Position | None:
    if decoded.topic is None or decoded.partition is None or decoded.offset is None:
        return None
    return decoded.topic, decoded.partition, decoded.offset


def _value(keyed: tuple[str, V]) -> V:
    return keyed[1]


def _erasure_inputs(decoded: Decoded) -> list[Stamped[ToCustomer] | Stamped[EraseAnonymous]]:
    if not isinstance(decoded.item, EraseCustomer):
        return []  # a rule deployment: the rule registry's business
    return [Stamped(item) for item in erasure_inputs(decoded.item)]  # type: ignore[misc]


def _erase_anonymous(
    stamped: Stamped[ToCustomer] | Stamped[EraseAnonymous],
) -> Stamped[AnonymousInput] | None:
    return stamped if isinstance(stamped.item, EraseAnonymous) else None  # type: ignore[return-value]


def _forwarded(out: object) -> Stamped[ToCustomer] | None:
    if isinstance(out, Stamped) and isinstance(out.item, ToCustomer):
        return out
    return None


def _effect(out: AnonymousOutput) -> Effect | None:
    return None if isinstance(out, Stamped) else out


def _stamped(partition_time: PartitionTime, decoded: Decoded) -> Stamped[BaseEvent]:
    """The event with its partition's watermark (dataflows/stream_clock.py)."""
    event = decoded.item
    assert isinstance(event, BaseEvent)
    source = f"{decoded.topic}:{decoded.partition}"
    return Stamped(event, source, partition_time.observe(source, event.ts, decoded.offset))


def _link(stamped: Stamped[BaseEvent]) -> Stamped[AnonymousInput] | None:
    link: Link | None = link_of(stamped.item)
    return None if link is None else stamped.carrying(link)


def _signal(effect: Effect) -> ItemSignal | None:
    return effect if isinstance(effect, ItemSignal) else None


def _to_customer(stamped: Stamped[BaseEvent]) -> Stamped[ToCustomer]:
    event = stamped.item
    assert event.customer_id is not None  # decode guarantees one of the two ids
    return stamped.carrying(ToCustomer(event.customer_id, event))


def _profile_write(effect: Effect) -> ProfileWrite | None:
    if isinstance(effect, ProfileChanged):
        return effect.state
    if isinstance(effect, ProfileRemoved | SegmentsChanged):
        return effect
    return None


def _item_popularity(state: ItemState | None, signal: ItemSignal) -> tuple[ItemState, ItemState]:
    updated = apply_signal(state, signal)
    return updated, updated
