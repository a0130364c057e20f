"""The personalization dataflow; steps follow the flow drawn in DESIGN.md.

    events_in -> route (decode, sort, stamp: one call per batch, dataflows/batches.py)
      -> progress_out (positions and counts -> Redis, for pulse status; built last)
      -> dead letters -> events_dlq
      -> anonymous-only events, links -------> resolve_identity (per anonymous id) --+
      -> events with a customer id ----------------------------------------------------+
    control_in -> decode_control -> erasures (customer and anonymous ids) ----------+
                  (rule deployments: read by every process, dataflows/rule_registry.py)
                                                                                    v
      customer_state (per customer: one call per customer per batch)
        -> gather (one Outputs per batch) -> profiles_out (views + segments -> Redis)
                                          -> triggers_out, decisions_out (Kafka)
                                          -> rule_stats (per rule) -> Redis
                                          -> item_popularity (per item) -> Redis
                                          -> score_models (one key: labels) -> Redis
                                          -> next_best_action (per shard, with
                                             actions.yaml: dataflows/nba_step.py)
                                             -> nba_out (Kafka), nba_serving (Redis)

Every step between the state steps handles a whole batch in one call (Bytewax's
``flat_map_batch``), and the state steps get each key's share of a batch in
one call (``stateful_batch``): an event crosses four Python calls of Bytewax's
instead of about twenty (docs/profiles.md has the figures).

Run it with ``pulse run`` (which adds recovery and cluster options).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows.batches import Keyed, Outputs, Routed, gather, route
from dataflows.caught_up import CaughtUpReports
from dataflows.customer_step import (
    AnonymousLogic,
    CustomerLogic,
    Stamped,
    StepOut,
)
from dataflows.item_sink import ItemLogic, RedisItemSink
from dataflows.kafka_io import (
    Decoded,
    FlowLayout,
    SinkRecord,
    control_source,
    dead_letter_message,
    decision_message,
    decode_control_record,
    events_source,
    kafka_output,
    rerouted_message,
    trigger_message,
)
from dataflows.metrics import FLOW_METRICS
from dataflows.nba_inputs import CustomerSide
from dataflows.nba_step import PolicyLogic, RedisNbaSink, nba_records, shard_key
from dataflows.progress_sink import RedisProgressSink
from dataflows.redis_sink import RedisProfileSink
from dataflows.rule_stats import RedisRuleStatsSink, RuleCountsLogic
from dataflows.score_models import MODEL_KEY, RedisModelSink, ScoreModelLogic
from dataflows.stream_clock import PartitionTime, StreamClock
from engine.control import CustomerMerged
from engine.customer import Engine
from engine.decode import DeadLetter
from engine.identity import ToCustomer, control_inputs
from engine.nba.book import ActionBook
from engine.nba.records import Input
from engine.popularity import ItemSignal
from engine.privacy import EraseCustomer
from engine.recs.relations import PairSignal
from pulse.keys import RedisKeys
from pulse.settings import Settings


def build_flow(
    settings: Settings,
    engine: Engine,
    clock: StreamClock,
    partition_time: PartitionTime,
    flow_id: str = "pulse",
    layout: FlowLayout | None = None,
    recovery: bool = True,
    actions: ActionBook | None = None,
) -> Dataflow:
    """The flow around an engine (rules and loyalty loaded by the caller, see
    dataflows/run.py) and the process's stream clock; ``layout``: how many
    workers the flow has in all (one by default) and where its stateful steps
    note when they want to wake (the stream clock's). Without ``recovery``
    the customer states skip encoding the snapshots nobody will read. With
    ``actions`` (rules/actions.yaml) the flow makes next-best-action decisions."""
    keys = RedisKeys(settings.redis_prefix)
    layout = layout or FlowLayout(wakeups=clock.wakeups)

    flow = Dataflow(flow_id)
    reports = CaughtUpReports(settings.redis, keys)
    raw = op.input("events_in", flow, events_source(settings, reports, partition_time, layout))
    routed: Stream[Routed] = op.flat_map_batch("route", raw, partial(_route, partition_time))
    dead = op.flat_map_batch("dead_letters", routed, partial(_dead_letters, settings))
    kafka_output(settings, layout, "events_dlq", dead)
    direct = op.flat_map_batch("known_customer", routed, _customers)
    anonymous = op.flat_map_batch("anonymous", routed, _anonymous)

    # Control messages (erasures) take effect at one point of the stream.
    # (Rule deployments on the same topic are read by every process's rule
    # registry instead: every worker needs every version.) Rare: item by item.
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
    erase_split = op.branch("erase_where", erasures, lambda kv: isinstance(kv[1].item, ToCustomer))

    nba = CustomerSide(actions, engine) if actions is not None else None

    # Identity (engine/identity.py): anonymous-only events, and links from
    # events carrying both ids, pass the anonymous id's state first.
    identities: Stream[Keyed] = op.stateful_batch(
        "resolve_identity",
        op.merge("to_anonymous", anonymous, erase_split.falses),
        lambda state: AnonymousLogic(engine, clock, state, recovery, nba),
    )
    forwarded = op.flat_map_batch("linked_to_customer", identities, _forwarded)
    customers: Stream[Keyed] = op.stateful_batch(
        "customer_state",
        op.merge("to_customers", direct, forwarded, erase_split.trues),
        lambda state: CustomerLogic(engine, clock, state, recovery, nba),
    )
    outputs: Stream[Outputs] = op.flat_map_batch(
        "gather", op.merge("all_effects", identities, customers), _gather
    )
    # Timely runs a worker's operators in the order they were built, so the
    # triggers are handed to Kafka before the batch's Redis writes, not after
    # them: a trigger waits for no Redis round trip.
    kafka_output(
        settings,
        layout,
        "triggers_out",
        op.flat_map_batch("trigger_records", outputs, partial(_trigger_records, settings)),
    )
    op.output("profiles_out", outputs, RedisProfileSink(settings.redis, keys))
    kafka_output(
        settings,
        layout,
        "decisions_out",
        op.flat_map_batch("decision_records", outputs, partial(_decision_records, settings)),
    )
    # An alias of two known customers: a profile handed over, events sent on.
    kafka_output(
        settings,
        layout,
        "rerouted_out",
        op.flat_map_batch("rerouted_records", outputs, partial(_rerouted_records, settings)),
    )
    by_rule = op.flat_map_batch("key_by_rule", outputs, _by_rule)
    rule_counts = op.stateful_batch("rule_stats", by_rule, RuleCountsLogic)
    op.output("rule_stats_out", rule_counts, RedisRuleStatsSink(settings.redis, keys))
    by_item = op.flat_map_batch("key_by_item", outputs, _by_item)
    items = op.stateful_batch("item_popularity", by_item, lambda state: ItemLogic(state, recovery))
    op.output("items_out", items, RedisItemSink(settings.redis, keys))
    if engine.scorer is not None:
        scores = engine.scorer.settings
        models = op.stateful_batch(
            "score_models",
            op.flat_map_batch("key_by_model", outputs, _by_model),
            lambda state: ScoreModelLogic(scores, state),
        )
        op.output("models_out", models, RedisModelSink(settings.redis, keys))
    if actions is not None:
        by_shard = op.flat_map_batch(
            "key_by_shard", outputs, partial(_by_shard, settings.nba_shards)
        )
        effects: Stream[tuple[str, list[Any]]] = op.stateful_batch(
            "next_best_action",
            by_shard,
            lambda state: PolicyLogic(actions, clock, state, recovery),
        )
        kafka_output(
            settings,
            layout,
            "nba_out",
            op.flat_map_batch("nba_records", effects, partial(nba_records, settings)),
        )
        op.output("nba_serving", effects, RedisNbaSink(settings.redis, keys))
    # Positions last: a batch's position reaches Redis after what the batch
    # changed (pulse status, and "caught up" for whoever waits on it).
    op.output("progress_out", routed, RedisProgressSink(settings.redis, keys))
    return flow


def _route(partition_time: PartitionTime, batch: list[Any]) -> list[Routed]:
    FLOW_METRICS.batch_decoded()
    return [route(partition_time, batch)] if batch else []


def _gather(batch: list[tuple[str, StepOut]]) -> list[Outputs]:
    out = gather(batch)
    FLOW_METRICS.batch_updated()  # dataflows/metrics.py: the batch's update time
    return out


def _dead_letters(settings: Settings, batch: list[Routed]) -> list[SinkRecord]:
    return [dead_letter_message(settings, d) for routed in batch for d in routed.dead]


def _customers(batch: list[Routed]) -> list[Keyed]:
    if len(batch) == 1:
        return batch[0].customers
    return [kv for routed in batch for kv in routed.customers]


def _anonymous(batch: list[Routed]) -> list[Keyed]:
    if len(batch) == 1:
        return batch[0].anonymous
    return [kv for routed in batch for kv in routed.anonymous]


def _forwarded(batch: list[tuple[str, StepOut]]) -> list[Keyed]:
    return [(t.item.customer_id, t) for _key, out in batch for t in out.forward]


def _erasure_inputs(decoded: Decoded) -> list[Keyed]:
    """Where an erasure goes, keyed: the customer's state and each linked
    anonymous id's; a profile handed over by an alias: its new customer's."""
    if not isinstance(decoded.item, EraseCustomer | CustomerMerged):
        return []  # a rule deployment: the rule registry's business
    out: list[Keyed] = []
    for item in control_inputs(decoded.item):
        key = item.customer_id if isinstance(item, ToCustomer) else item.anonymous_id
        out.append((key, Stamped(item)))
    return out


def _trigger_records(settings: Settings, batch: list[Outputs]) -> list[SinkRecord]:
    return [trigger_message(settings, t) for out in batch for t in out.triggers]


def _rerouted_records(settings: Settings, batch: list[Outputs]) -> list[SinkRecord]:
    return [rerouted_message(settings, r) for out in batch for r in out.rerouted]


def _decision_records(settings: Settings, batch: list[Outputs]) -> list[SinkRecord]:
    return [decision_message(settings, d) for out in batch for d in out.decisions]


def _by_rule(batch: list[Outputs]) -> list[Keyed]:
    return [(d.rule_id, d) for out in batch for d in out.decisions]


def _by_model(batch: list[Outputs]) -> list[Keyed]:
    """A batch's labelled examples, as one item for the one model key."""
    examples = [e for out in batch for e in out.examples]
    return [(MODEL_KEY, examples)] if examples else []


def _by_shard(shards: int, batch: list[Outputs]) -> list[Keyed]:
    """A batch's next-best-action inputs, one list per policy shard, each
    customer's in the order of their events."""
    if shards == 1:
        inputs = [i for out in batch for i in out.nba]
        return [("nba:0", inputs)] if inputs else []
    grouped: dict[str, list[Input]] = {}
    for out in batch:
        for item in out.nba:
            grouped.setdefault(shard_key(item.customer_id, shards), []).append(item)
    return list(grouped.items())


def _by_item(batch: list[Outputs]) -> list[Keyed]:
    """A batch's signals grouped by item, in order: one item to exchange and one
    call per item a batch touched, however many signals it had (popular items
    have many)."""
    grouped: dict[str, list[ItemSignal | PairSignal]] = {}
    for out in batch:
        for signal in out.signals:
            same = grouped.get(signal.sku)
            if same is None:
                grouped[signal.sku] = [signal]
            else:
                same.append(signal)
    return list(grouped.items())
