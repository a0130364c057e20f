"""Which input partitions have been read to their end, shared by every process.

The stream clock may follow the wall clock for a partition only when nothing
in it is left unread; silence alone does not say so, since a partition read by
another process of a cluster goes quiet at this one when that process stalls.
Each source partition knows (its position against the end librdkafka last
fetched) and reports it here; every process publishes its reports in one Redis
hash and reads everyone's back a few times a second.
"""

from __future__ import annotations

import logging
import threading
import time

import orjson
import redis

from dataflows.stream_clock import StreamClock
from pulse.keys import RedisKeys

log = logging.getLogger(__name__)

REPORT_EVERY_S = 0.2  # a partition's status is written at most this often
READ_EVERY_S = 0.25


class CaughtUpReports:
    """Source side: partitions report their lag after each poll; writes are throttled."""

    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._key = keys.caught_up()
        self._written: dict[str, tuple[float, int | None]] = {}
        self._client: redis.Redis | None = None

    def report(self, source: str, lag: int | None) -> None:
        """``lag``: records left to read (0: read to the end; None: not known yet)."""
        now = time.time()
        last = self._written.get(source)
        if last is not None and (last[1] == 0) == (lag == 0) and now - last[0] < REPORT_EVERY_S:
            return
        self._written[source] = (now, lag)
        try:
            if self._client is None:
                self._client = redis.Redis.from_url(self._url, socket_timeout=2)
            self._client.hset(self._key, source, orjson.dumps([now, lag]))
        except redis.RedisError as exc:  # the clock then holds: late, never wrong
            log.warning("could not report the lag of %s: %s", source, exc)


class CaughtUpReader:
    """Customer side: feeds every process's reports to the stream clock."""

    def __init__(self, url: str, keys: RedisKeys, clock: StreamClock) -> None:
        self._url = url
        self._key = keys.caught_up()
        self._clock = clock
        self._stop = threading.Event()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="caught-up", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        client: redis.Redis = redis.Redis.from_url(self._url, socket_timeout=2)
        previous: dict[str, tuple[float, int]] = {}
        while not self._stop.wait(READ_EVERY_S):
            try:
                raw: dict[bytes, bytes] = client.hgetall(self._key)  # type: ignore[assignment]
            except redis.RedisError as exc:
                log.warning("could not read which partitions are caught up: %s", exc)
                continue
            reports = {}
            finish_s = 0.0  # when, at the pace seen, every partition will be read to its end
            for name, value in raw.items():
                source = name.decode()
                at, lag = orjson.loads(value)
                reports[source] = (float(at), lag == 0)
                if lag is None or lag == 0:
                    continue
                seen = previous.get(source)
                if seen is not None and at > seen[0] and seen[1] > lag:
                    finish_s = max(finish_s, lag / ((seen[1] - lag) / (at - seen[0])))
                else:
                    finish_s = float("inf")  # not moving yet: no estimate
                previous[source] = (float(at), int(lag))
            self._clock.reports(reports, time.time(), finish_s)
