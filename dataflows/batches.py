"""The flow's work done once per batch instead of once per item.

Bytewax costs a Python call, and a trip between Rust and Python, per item per
step. An event used to cross about twenty steps (decode, branches, keys,
state, effect filters, sinks): more time than the engine spent on it. Here the
stateless work around the state steps handles a whole batch in one call:

- ``route`` decodes a batch read from Kafka and sorts it, in one pass, into
  what goes to customers, what goes to anonymous ids, the dead letters and
  the positions reached; one ``Routed`` per batch travels on, and small
  ``flat_map_batch`` steps take out what each destination needs.
- The state steps (dataflows/customer_step.py) answer each key's batch with
  one ``StepOut``: the effects in order, and the serving view encoded once,
  from the last state, however many of the customer's events the batch held.
- ``gather`` folds a batch of ``StepOut`` into one ``Outputs``, which every
  sink and output router then reads in one call.

The order of a customer's events, and of the effects they cause, is the
order they would have had item by item, so the bytes served and the records
written are the same (the crash test compares them byte for byte).
"""

from __future__ import annotations

import time
from typing import Any

from bytewax.connectors.kafka import KafkaError

from dataflows.customer_step import Stamped, StepOut
from dataflows.kafka_io import Decoded, RawMessage, kafka_error_letter
from dataflows.stream_clock import PartitionTime
from engine.control import CustomerMerged
from engine.customer import Forwarded, SegmentsChanged
from engine.decode import DeadLetter, decode_event
from engine.events import Alias
from engine.identity import Link, ToCustomer
from engine.nba.records import Input
from engine.popularity import ItemSignal
from engine.recs.relations import PairSignal
from engine.scores.labels import Example
from engine.triggers import Decision, Trigger, TriggerFired

Keyed = tuple[str, Any]


class Routed:
    """One batch of source records, sorted by where each must go next."""

    __slots__ = ("anonymous", "customers", "dead", "positions", "read")

    def __init__(self) -> None:
        self.customers: list[tuple[str, Stamped[ToCustomer]]] = []
        self.anonymous: list[tuple[str, Stamped[Any]]] = []  # events and links
        self.dead: list[Decoded] = []
        self.positions: dict[str, int] = {}  # "topic:partition" -> next offset to read
        self.read = 0


def route(partition_time: PartitionTime, batch: list[RawMessage | KafkaError[Any, Any]]) -> Routed:
    """Decode a batch and sort it (see the module docstring).

    Events with a customer id go straight to the customer; anonymous-only
    events, and links from events carrying both ids, go to the anonymous id's
    state first (engine/identity.py). Each carries the watermark of the
    partition it came from (dataflows/stream_clock.py), observed in offset
    order as the source read them.
    """
    out = Routed()
    out.read = len(batch)
    received = time.time()
    customers, anonymous, positions = out.customers, out.anonymous, out.positions
    observe = partition_time.observe
    for msg in batch:
        if isinstance(msg, KafkaError):
            letter = kafka_error_letter(msg)
            out.dead.append(letter)
            if letter.offset is not None:
                source = f"{letter.topic}:{letter.partition}"
                positions[source] = max(positions.get(source, -1), letter.offset + 1)
            continue
        source = f"{msg.topic}:{msg.partition}"
        offset = msg.offset
        if offset is not None:
            positions[source] = offset + 1
        item = decode_event(msg.value or b"", received)
        if isinstance(item, DeadLetter):
            out.dead.append(Decoded(item, msg.topic, msg.partition, offset))
            continue
        watermark = observe(source, item.ts, offset)
        customer_id = item.customer_id
        anonymous_id = item.anonymous_id
        raw = msg.value
        if customer_id is None:
            assert anonymous_id is not None  # decode guarantees one of the two ids
            anonymous.append((anonymous_id, Stamped(item, source, watermark, raw, received)))
            continue
        to_customer = ToCustomer(customer_id, item)
        customers.append((customer_id, Stamped(to_customer, source, watermark, raw, received)))
        if anonymous_id is not None:
            link = Link(anonymous_id, customer_id, item.ts, type(item) is Alias)
            anonymous.append((anonymous_id, Stamped(link, source, watermark)))
    return out


class Outputs:
    """Everything one batch of the state steps wrote, for the sinks."""

    __slots__ = (
        "decisions",
        "emails",
        "examples",
        "features",
        "items",
        "nba",
        "rerouted",
        "segments",
        "signals",
        "triggers",
        "unindex",
        "views",
    )

    def __init__(self) -> None:
        self.views: dict[str, bytes | None] = {}
        self.items: dict[str, bytes] = {}  # customer key -> encoded ShopperItems
        self.features: dict[str, bytes] = {}  # customer key -> encoded score features
        self.examples: list[Example] = []  # labelled, to the score models' step
        self.emails: dict[str, str] = {}  # customer key -> e-mail digest to index
        self.unindex: set[str] = set()  # customer keys erased: out of the e-mail index
        self.segments: list[SegmentsChanged] = []
        self.triggers: list[Trigger] = []
        self.decisions: list[Decision] = []
        self.signals: list[ItemSignal | PairSignal] = []  # to the items' step
        # What an alias of two known customers sends back to Kafka (engine/identity.py).
        self.rerouted: list[Forwarded | CustomerMerged] = []
        self.nba: list[Input] = []  # to the next-best-action policy (dataflows/nba_step.py)


def gather(batch: list[tuple[str, StepOut]]) -> list[Outputs]:
    """The state steps' answers for one batch, folded into one ``Outputs``."""
    out = Outputs()
    views = out.views
    for _key, step in batch:
        views.update(step.views)
        if step.items:
            out.items.update(step.items)
        if step.features:
            out.features.update(step.features)
        if step.nba:
            out.nba += step.nba
        if step.unindex:
            out.unindex |= step.unindex
            for key in step.unindex:
                out.emails.pop(key, None)
        if step.emails:
            out.emails.update(step.emails)
        for effect in step.effects:
            if isinstance(effect, ItemSignal | PairSignal):
                out.signals.append(effect)
            elif isinstance(effect, Decision):
                out.decisions.append(effect)
            elif isinstance(effect, TriggerFired):
                out.triggers.append(effect.trigger)
            elif isinstance(effect, SegmentsChanged):
                out.segments.append(effect)
            elif isinstance(effect, Forwarded | CustomerMerged):
                out.rerouted.append(effect)
            elif isinstance(effect, Example):
                out.examples.append(effect)
    if not (
        views
        or out.segments
        or out.signals
        or out.decisions
        or out.triggers
        or out.rerouted
        or out.examples
        or out.nba
        or out.emails
        or out.unindex
    ):
        return []
    return [out]
