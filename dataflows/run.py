"""Runs the personalization flow with recovery, locally or as one process of a cluster."""

from __future__ import annotations

import fcntl
import gc
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from dataflows.caught_up import CaughtUpReader
from dataflows.kafka_io import FlowLayout
from dataflows.metrics import FLOW_METRICS
from dataflows.personalize import build_flow
from dataflows.rule_registry import RuleRegistry
from dataflows.stream_clock import PartitionTime, StreamClock
from engine.customer import Engine
from engine.nba.book import ActionBook
from engine.profile import STATE_VERSION
from engine.rules.ruleset import RuleBook
from pulse.keys import RedisKeys
from pulse.rules_files import RulesFileError, load_action_book, load_loyalty, load_rules
from pulse.settings import Settings

log = logging.getLogger(__name__)


def ensure_recovery_dir(path: Path, partitions: int) -> None:
    """Create the recovery partitions once; later runs resume from them.

    The processes of a cluster start together and share the directory: a file
    lock makes exactly one of them create the partitions.
    """
    path.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(path.glob("part-*.sqlite3")):
            return
        init_db_dir(path, partitions)
        log.info("created %d recovery partition(s) in %s", partitions, path)


def keep_state_out_of_gc(every_s: float = 10.0) -> threading.Thread:
    """Freeze long-lived objects so the cyclic GC stops re-scanning customer state.

    With a million customers in memory a full collection walks millions of
    objects (2.2 s measured for 630k customers), and the collector runs more
    often as state grows: the dataflow's throughput collapsed from ~8,000 to
    ~1,500 events/s at 1M customers. Customer state holds no reference cycles
    (it is freed by reference counting when replaced), so moving it to the
    permanent generation is safe.

    The youngest generation is also collected less often: every batch makes
    tens of thousands of short-lived objects (decoded events, effects), all
    freed by reference counting, and a collection every 700 allocations
    only walked them in vain (1.07-1.13x the events/s with 100,000, measured
    side by side with benchmarks/profiles.py's events).
    """
    gc.set_threshold(100_000, 50, 1000)

    def loop() -> None:
        while True:
            time.sleep(every_s)
            gc.freeze()

    thread = threading.Thread(target=loop, name="gc-freeze", daemon=True)
    thread.start()
    return thread


def build_engine(settings: Settings) -> Engine:
    """The engine with the rules and loyalty programme of ``rules_dir``.

    The rules found there are the base version, in force until the first
    deployment on the control topic takes over. An invalid rule directory
    stops the start with every problem listed, rather than running without
    the rules a marketer expects.
    """
    loaded = load_rules(settings.rules_dir)
    if loaded.rules is None:
        problems = "\n".join(f"  {p}" for p in loaded.problems)
        raise RulesFileError(f"the rules in {settings.rules_dir} have problems:\n{problems}")
    log.info(
        "rules from %s: version %s, %d rule(s) enabled",
        settings.rules_dir,
        loaded.rules.version,
        len(loaded.rules.rules),
    )
    return Engine(
        RuleBook(loaded.rules),
        dedup_window_s=settings.dedup_window_s,
        loyalty=load_loyalty(settings.rules_dir),
        scores=settings.score_settings() if settings.scores else None,
    )


def build_actions(settings: Settings) -> ActionBook | None:
    """Next-best-action's ``actions.yaml`` from ``rules_dir``, or None without
    one (no decisions are made). Like an invalid rule, an invalid file stops
    the start with every problem listed."""
    loaded = load_action_book(settings.rules_dir)
    if loaded is None:
        log.info("no actions.yaml in %s: next-best-action off", settings.rules_dir)
        return None
    if loaded.book is None:
        problems = "\n".join(f"  {p}" for p in loaded.problems)
        raise RulesFileError(f"actions.yaml in {settings.rules_dir} has problems:\n{problems}")
    book = loaded.book
    log.info(
        "next-best-action: %d action(s), context version %s, %d shard(s)",
        len(book.actions),
        book.version,
        settings.nba_shards,
    )
    return book


def run(
    settings: Settings,
    *,
    recovery_dir: Path | None,
    process_id: int | None = None,
    addresses: list[str] | None = None,
) -> None:
    engine = build_engine(settings)
    actions = build_actions(settings)
    partition_time = PartitionTime(settings.event_lateness_s)
    clock = StreamClock(
        settings.event_lateness_s,
        started_at=time.time(),
        first_stamp_s=settings.snapshot_interval_s,
    )
    registry = RuleRegistry(settings, engine.book, stream_time=partition_time.latest)
    registry.catch_up()
    registry.follow()
    CaughtUpReader(settings.redis, RedisKeys(settings.redis_prefix), clock).start()
    # The flow's workers over all its processes (the connectors need to know,
    # dataflows/kafka_io.py), and where its steps note when they want to wake.
    layout = FlowLayout(settings.workers * max(1, len(addresses or [])), clock.wakeups)
    flow = build_flow(
        settings,
        engine,
        clock,
        partition_time,
        layout=layout,
        recovery=recovery_dir is not None,
        actions=actions,
    )
    recovery = None
    if recovery_dir is not None:
        # Snapshots are kept per state version (engine.profile.STATE_VERSION):
        # after an incompatible change the flow rebuilds from the topic.
        recovery_dir = recovery_dir / f"state-v{STATE_VERSION}"
        ensure_recovery_dir(recovery_dir, max(1, len(addresses or [])))
        recovery = RecoveryConfig(str(recovery_dir))
    keep_state_out_of_gc()
    FLOW_METRICS.serve(settings, process_id)
    log.info(
        "dataflow starting: %s -> profiles in %s, triggers to %s (recovery %s)",
        settings.events_topic,
        settings.redis,
        settings.triggers_topic,
        recovery_dir or "off",
    )
    cli_main(
        flow,
        workers_per_process=settings.workers,
        process_id=process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
        recovery_config=recovery,
    )
