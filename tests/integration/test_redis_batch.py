"""The sinks' batched Redis writes (dataflows/redis_batch.py) against the real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ResponseError

from dataflows.redis_batch import write_all
from pulse.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_client(pulse_settings: Settings) -> Iterator[redis.Redis]:
    """Bytes in and out, as the flow's sinks use Redis."""
    client: redis.Redis = redis.Redis.from_url(pulse_settings.redis)
    yield client
    client.close()


def test_a_batch_lands_in_order_with_the_values_a_pipeline_would_write(
    redis_client: redis.Redis, pulse_settings: Settings
) -> None:
    p = pulse_settings.redis_prefix
    write_all(
        redis_client,
        [
            ("HSET", f"{p}:{{c1}}:profile", "view", b"\x00\xffbytes"),
            ("ZADD", f"{p}:popular", 0.1 + 0.2, "sku-1", -1.5, "sku-2"),
            ("SADD", f"{p}:segment:s", "c1"),
            ("SREM", f"{p}:segment:s", "c1"),
            ("SADD", f"{p}:segment:s", "c2"),
        ],
    )
    assert redis_client.hget(f"{p}:{{c1}}:profile", "view") == b"\x00\xffbytes"
    assert redis_client.zscore(f"{p}:popular", "sku-1") == 0.1 + 0.2  # repr, bit for bit
    assert redis_client.zscore(f"{p}:popular", "sku-2") == -1.5
    assert redis_client.smembers(f"{p}:segment:s") == {b"c2"}


def test_an_error_reply_is_raised_after_every_reply_is_read(
    redis_client: redis.Redis, pulse_settings: Settings
) -> None:
    p = pulse_settings.redis_prefix
    redis_client.set(f"{p}:string", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        write_all(
            redis_client,
            [("SADD", f"{p}:string", "a"), ("HSET", f"{p}:{{c1}}:profile", "view", b"v")],
        )
    # The command after the failed one was applied and the connection is in step.
    assert redis_client.hget(f"{p}:{{c1}}:profile", "view") == b"v"
    write_all(redis_client, [("HSET", f"{p}:{{c1}}:profile", "view", b"w")])
    assert redis_client.hget(f"{p}:{{c1}}:profile", "view") == b"w"


def test_a_dropped_connection_is_reopened_and_the_batch_sent_again(
    redis_client: redis.Redis, pulse_settings: Settings
) -> None:
    p = pulse_settings.redis_prefix
    write_all(redis_client, [("HSET", f"{p}:{{c1}}:profile", "view", b"1")])
    mine = redis_client.client_id()  # the pool's one connection, which write_all reuses
    admin: redis.Redis = redis.Redis.from_url(pulse_settings.redis)
    admin.client_kill_filter(_id=str(mine))
    write_all(redis_client, [("HSET", f"{p}:{{c1}}:profile", "view", b"2")])
    assert redis_client.hget(f"{p}:{{c1}}:profile", "view") == b"2"
    admin.close()
