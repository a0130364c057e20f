"""The personalization dataflow; steps follow the flow drawn in DESIGN.md.

    events_in -> decode -> (bad -> events_dlq)
              -> key_by_customer -> customer_state -> profile -> Redis
                                                   -> triggers -> pulse.triggers
              -> item_signals -> key_by_item -> item_popularity -> Redis

Run it with ``pulse run`` (which adds recovery and cluster options).
"""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from dataflows.customer_step import CustomerLogic
from dataflows.item_sink import RedisItemSink
from dataflows.kafka_io import (
    Decoded,
    dead_letter_message,
    decode,
    events_source,
    sink,
    trigger_message,
)
from dataflows.redis_sink import RedisProfileSink
from engine.customer import Engine, ProfileChanged, TriggerFired
from engine.decode import DeadLetter
from engine.events import BaseEvent
from engine.popularity import ItemSignal, ItemState, apply_signal, item_signals
from engine.triggers import abandoned_cart
from pulse.keys import RedisKeys
from pulse.settings import Settings


def build_flow(settings: Settings, flow_id: str = "pulse") -> Dataflow:
    engine = Engine([abandoned_cart(settings.abandoned_cart_delay_s)])
    keys = RedisKeys(settings.redis_prefix)
    kafka_out = sink(settings)

    flow = Dataflow(flow_id)
    raw = op.input("events_in", flow, events_source(settings))
    decoded = op.map("decode", raw, decode)
    split = op.branch("split_bad", decoded, lambda d: not isinstance(d.item, DeadLetter))

    dead = op.map("dead_letter", split.falses, partial(dead_letter_message, settings))
    op.output("events_dlq", dead, kafka_out)

    events = op.map("events", split.trues, _event_of)
    keyed = op.key_on("key_by_customer", events, lambda e: e.customer_key)
    effects = op.stateful("customer_state", keyed, lambda state: CustomerLogic(engine, state))
    effects = op.key_rm("unkey_effects", effects)  # type: ignore[arg-type]

    profiles = op.filter_map(
        "profile", effects, lambda e: e.state if isinstance(e, ProfileChanged) else None
    )
    op.output("profiles_out", profiles, RedisProfileSink(settings.redis, keys))

    triggers = op.filter_map(
        "triggers", effects, lambda e: e.trigger if isinstance(e, TriggerFired) else None
    )
    op.output(
        "triggers_out",
        op.map("trigger_record", triggers, partial(trigger_message, settings)),
        kafka_out,
    )

    signals = op.flat_map("item_signals", events, item_signals)
    by_item = op.key_on("key_by_item", signals, lambda s: s.sku)
    items = op.stateful_map("item_popularity", by_item, _item_popularity)
    op.output("items_out", op.key_rm("unkey_items", items), RedisItemSink(settings.redis, keys))
    return flow


def _item_popularity(state: ItemState | None, signal: ItemSignal) -> tuple[ItemState, ItemState]:
    updated = apply_signal(state, signal)
    return updated, updated


def _event_of(decoded: Decoded) -> BaseEvent:
    assert not isinstance(decoded.item, DeadLetter)
    return decoded.item
