"""Hot reload: a deployed rule version takes over in the running dataflow, an invalid one is
refused, a rollback returns to the previous version, and `pulse status` tells which is in force.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from engine.rules.validate import load
from pulse.keys import RedisKeys
from pulse.rules_files import rule_files
from pulse.settings import Settings, load_settings
from tests.helpers import PulseProcess, consume, produce_events, value_of, wait_for

pytestmark = pytest.mark.e2e

PING = """
id: view_ping
description: Every product view pings a webhook (test rule).
category: transactional
trigger: {event: product_view}
action: {channel: webhook, template: ping, payload: {sku: event.sku}}
"""


def pulse(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **settings.as_environ())
    return subprocess.run(
        [sys.executable, "-m", "pulse.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def view(customer: str, at: float) -> dict[str, Any]:
    return {
        "type": "product_view",
        "event_id": f"{customer}-view",
        "customer_id": customer,
        "sku": f"sku-{customer}",
        "timestamp": dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat(),
    }


def loaded_version(settings: Settings) -> str | None:
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    raw = client.get(RedisKeys(settings.redis_prefix).rules_status())
    client.close()
    return orjson.loads(raw)["version"] if isinstance(raw, bytes) else None


def pings(settings: Settings, expected: int) -> list[str]:
    records = consume(settings, settings.triggers_topic, expected, timeout_s=10)
    return sorted(
        orjson.loads(value_of(m))["customer_id"]
        for m in records
        if orjson.loads(value_of(m))["rule_id"] == "view_ping"
    )


def test_deploy_switches_the_running_flow_refuses_bad_sets_and_rolls_back(
    pulse_settings: Settings, tmp_path: Path
) -> None:
    shipped = Path(load_settings(environ={}).rules_dir)
    base = tmp_path / "base"
    shutil.copytree(shipped, base)
    with_ping = tmp_path / "with_ping"
    shutil.copytree(shipped, with_ping)
    (with_ping / "view_ping.yaml").write_text(PING)
    broken = tmp_path / "broken"
    shutil.copytree(with_ping, broken)
    (broken / "view_ping.yaml").write_text(PING.replace("product_view}", "product_veiw}"))

    settings = load_settings(environ=pulse_settings.as_environ(), rules_dir=str(base))
    base_version = load(rule_files(base)).rules.version  # type: ignore[union-attr]
    ping_version = load(rule_files(with_ping)).rules.version  # type: ignore[union-attr]
    flow = PulseProcess(settings, tmp_path, "dataflow", "run")
    try:
        wait_for(lambda: loaded_version(settings) == base_version, 30, "the base rule version")
        produce_events(settings, [view("before", time.time())])

        deployed = pulse(settings, "rules", "deploy", str(with_ping), "--wait")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert f"deployed version {ping_version}" in deployed.stdout
        assert "the dataflow has loaded version" in deployed.stdout
        time.sleep(settings.rules_activation_s + 0.5)  # past the version's effective time
        produce_events(settings, [view("during", time.time())])
        assert pings(settings, 1) == ["during"], "the new rule applies from its effective time"

        status = pulse(settings, "status", "--json")
        assert orjson.loads(status.stdout)["rules"]["version"] == ping_version, status.stdout

        refused = pulse(settings, "rules", "deploy", str(broken))
        assert refused.returncode == 1
        assert "view_ping.yaml:5:18: unknown event type `product_veiw`" in refused.stdout
        assert "the running version stays" in refused.stderr
        assert loaded_version(settings) == ping_version

        rolled = pulse(settings, "rules", "rollback", "--wait")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert f"rolled back from {ping_version}" in rolled.stdout
        assert loaded_version(settings) == base_version
        time.sleep(settings.rules_activation_s + 0.5)
        produce_events(settings, [view("after", time.time())])
        time.sleep(3)
        assert pings(settings, 2) == ["during"], "the rollback removed the rule again"

        versions = pulse(settings, "rules", "versions")
        assert versions.returncode == 0
        assert ping_version in versions.stdout and base_version in versions.stdout
        assert flow.alive(), flow.log_text()[-3000:]
    finally:
        flow.stop()
