"""Next-best-action in the flow: the customer's side, the policy step, its outputs.

    customer_state / resolve_identity (per customer, after each event applied)
      -> NBA inputs (dataflows/nba_inputs.py, engine/nba/customer.py: reward
         signals, contexts)
      -> key_by_shard ("nba:<shard>", one list per shard per batch)
      -> next_best_action (per shard: inputs held until the stream clock has
         passed them, engine/nba/order.py, then the policy, engine/nba/policy.py)
      -> nba_out (Decisions and Outcomes -> Kafka <prefix>.nba)
      -> nba_serving (each customer's live decision -> Redis, for the API)

Nothing of next-best-action is kept in the customer state: the customer's
side evaluates the eligibility and reward conditions on the profile just
updated, and the policy holds the model and the pending decisions
(docs/next-best-action.md, "Policy state and workers" and "Integration").
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
import redis
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.customer_step import WakeUp
from dataflows.metrics import FLOW_METRICS
from dataflows.redis_batch import Command, write_all
from dataflows.stream_clock import StreamClock
from engine.nba.book import ActionBook
from engine.nba.order import InOrder, Waiting
from engine.nba.policy import NextBestAction
from engine.nba.records import Decision, Effect, Input, served, unit
from pulse.keys import RedisKeys
from pulse.settings import Settings

# The profile hash field holding the customer's live decision (engine.nba.records
# Served, JSON), beside the view ("view") and the recommender's items ("items").
NBA_FIELD = "nba"


def shard_key(customer_id: str, shards: int) -> str:
    """The policy a customer meets: always the same one for a shard count
    (a hash of the id, not Python's salted one)."""
    if shards == 1:
        return "nba:0"
    return f"nba:{int(unit(customer_id, 'nba-shard') * shards)}"


class PolicyState(msgspec.Struct, kw_only=True):
    """A shard's snapshot: the policy, and the inputs it has not handled yet."""

    policy: bytes
    waiting: list[Waiting]


class PolicyLogic(StatefulBatchLogic[list[Input], list[Effect], bytes]):
    """One shard's policy. Inputs wait until the process's stream clock has
    passed their event time and are then handled in event-time order
    (engine/nba/order.py), so the decisions and what the policy learns do not
    depend on how the stream was cut into batches: a crash and a restart, or
    another number of workers, give the same records."""

    def __init__(
        self, book: ActionBook, clock: StreamClock, snapshot: bytes | None, recovery: bool = True
    ) -> None:
        self._clock = clock
        self._recovery = recovery
        self._wake = WakeUp()
        if snapshot is None:
            self._policy = NextBestAction(book)
            self._held = InOrder()
        else:
            state = msgspec.msgpack.decode(snapshot, type=PolicyState)
            self._policy = NextBestAction.restore(book, state.policy)
            self._held = InOrder.restore(state.waiting)

    def on_batch(self, values: list[list[Input]]) -> tuple[Iterable[list[Effect]], bool]:
        held = self._held
        for inputs in values:
            held.add(inputs)
        return self._release(), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[list[Effect]], bool]:
        return self._release(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[list[Effect]], bool]:
        return (), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        due = self._policy.next_due()
        earliest = self._held.earliest()
        if earliest is not None and (due is None or earliest < due):
            due = earliest
        return self._wake.at(due, self._clock)

    def snapshot(self) -> bytes:
        if not self._recovery:
            return b""
        state = PolicyState(policy=self._policy.snapshot(), waiting=self._held.snapshot())
        return msgspec.msgpack.encode(state)

    def _release(self) -> list[list[Effect]]:
        now = self._clock.now(time.time())
        if now == -math.inf:
            return []
        policy = self._policy
        effects = policy.handle(self._held.release(now))
        effects += policy.advance(now)
        if not effects:
            return []
        FLOW_METRICS.nba(effects)
        return [effects]


_json = msgspec.json.Encoder()


def nba_records(settings: Settings, batch: list[tuple[str, list[Effect]]]) -> list[Any]:
    """Decisions and Outcomes to ``<prefix>.nba``, keyed by customer, JSON
    tagged by ``type`` (``decision`` or ``outcome``)."""
    topic = settings.nba_topic
    return [
        KafkaSinkMessage(
            effect.customer_id.encode(),
            _json.encode(effect),
            topic=topic,
            headers=[("pulse.decision_id", effect.decision_id.encode())],
        )
        for _key, effects in batch
        for effect in effects
    ]


# The live decision goes into the customer's profile hash only while the
# profile exists: a decision made after an erasure (or after the profile was
# handed over to another customer) must not bring a profile key back.
_SET_LIVE = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 1"
)


class _ServingPartition(StatelessSinkPartition[tuple[str, list[Effect]]]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys

    def write_batch(self, items: list[tuple[str, list[Effect]]]) -> None:
        keys = self._keys
        wall = time.time()
        latest: dict[str, bytes] = {}
        commands: list[Command] = []
        for _key, effects in items:
            for effect in effects:
                if not isinstance(effect, Decision):
                    continue
                # Absolute values: a replay after a crash writes the same bytes.
                latest[effect.customer_id] = _json.encode(served(effect))
                expires = math.ceil(effect.expires_at)
                if expires > wall:  # a decision whose window is over takes no reward
                    key = keys.nba_decision(effect.decision_id)
                    commands.append(("SET", key, effect.customer_id, "EXAT", expires))
        for customer_id, encoded in latest.items():
            commands.append(("EVAL", _SET_LIVE, 1, keys.profile(customer_id), NBA_FIELD, encoded))
        write_all(self._client, commands)

    def close(self) -> None:
        self._client.close()


class RedisNbaSink(DynamicSink[tuple[str, list[Effect]]]):
    """Each customer's live decision (the profile hash's ``nba`` field), and
    ``nba:decision:<id>`` -> customer until the decision's window ends."""

    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ServingPartition:
        return _ServingPartition(self._url, self._keys)
