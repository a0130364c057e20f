"""The dispatcher's retry policy and circuit breaker, and the channel router."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.backoff import Backoff
from dispatch.breaker import CircuitBreaker
from dispatch.channels import Message, Outcome, Router
from pulse.settings import SettingsError, check_webhook_secret, load_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_circuit_opens_after_failures_in_a_row_and_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_s=10.0, clock=clock)
    for _ in range(2):
        assert breaker.wait_s() == 0
        breaker.record(False)
    breaker.record(True)  # a success resets the count
    for _ in range(3):
        assert breaker.wait_s() == 0
        breaker.record(False)
    assert breaker.state == "open" and breaker.wait_s() == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.state == "half-open"
    assert breaker.wait_s() == 0  # the trial
    assert breaker.wait_s() > 0  # only one at a time
    breaker.record(False)  # the trial failed: open again, at once
    assert breaker.state == "open" and breaker.wait_s() == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.wait_s() == 0
    breaker.record(True)
    assert breaker.state == "closed" and breaker.wait_s() == 0


@given(
    failures=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.001, max_value=5.0),
    cap=st.floats(min_value=5.0, max_value=120.0),
    after=st.none() | st.floats(min_value=0.0, max_value=1000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_jittered_below_an_exponential_ceiling_and_capped(
    failures: int, base: float, cap: float, after: float | None, seed: int
) -> None:
    delay = Backoff(base, cap, random.Random(seed)).delay(failures, after)
    assert 0.0 <= delay <= cap
    if after is None:
        assert delay <= base * 2 ** (failures - 1)
    else:
        assert delay >= min(after, cap)


def test_backoff_spreads_the_attempts_of_many_senders() -> None:
    backoff = Backoff(1.0, 60.0, random.Random(7))
    delays = [backoff.delay(4) for _ in range(1000)]
    assert max(delays) < 8.0 and min(delays) >= 0.0
    assert len({round(d, 2) for d in delays}) > 500  # not one synchronised retry


def test_a_channel_nobody_configured_is_a_permanent_failure_that_says_so() -> None:
    message = Message(
        idempotency_key="t1",
        rule_id="r",
        customer_id="c",
        channel="sms",
        template="t",
        recipient={},
        payload={},
    )
    outcome = Router({}).send(message)
    assert outcome == Outcome(
        "failed", "no sms channel is configured in this dispatcher (configured: none)"
    )


def test_webhook_settings_are_checked_at_start() -> None:
    assert check_webhook_secret(SECRET) is None
    assert "whsec_" in (check_webhook_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") or "")
    assert "24 to 64" in (check_webhook_secret("whsec_c2hvcnQ=") or "")
    with pytest.raises(SettingsError, match="webhook_url and webhook_secret go together"):
        load_settings(environ={"PULSE_WEBHOOK_URL": "http://127.0.0.1:1/hook"})
    with pytest.raises(
        SettingsError,
        match=r"webhook_endpoints \(from PULSE_WEBHOOK_ENDPOINTS\): crm: secret must start",
    ):
        load_settings(
            environ={"PULSE_WEBHOOK_ENDPOINTS": '{"crm": {"url": "http://x/y", "secret": "plain"}}'}
        )
    with pytest.raises(SettingsError, match="PULSE_WEBHOOK_ENDPOINTS"):
        load_settings(environ={"PULSE_WEBHOOK_ENDPOINTS": "{not json"})


def test_webhook_endpoints_reach_a_child_process_and_are_masked_in_logs() -> None:
    settings = load_settings(
        environ={
            "PULSE_WEBHOOK_ENDPOINTS": orjson.dumps(
                {"crm": {"url": "http://x/y", "secret": SECRET}}
            ).decode(),
            "PULSE_WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "PULSE_WEBHOOK_SECRET": SECRET,
        }
    )
    again = load_settings(environ=settings.as_environ())
    assert again == settings
    masked = settings.masked()
    assert SECRET not in str(masked)
    assert masked["webhook_endpoints"]["crm"]["url"] == "http://x/y"


def test_the_lease_must_outlast_the_slowest_configured_channel() -> None:
    assert load_settings(environ={}, dispatch_lease_s=2.0).dispatch_lease_s == 2.0
    with pytest.raises(SettingsError, match=r"longest channel timeout \(10 s\)"):
        load_settings(environ={}, smtp_host="127.0.0.1", link_secret="x" * 16, dispatch_lease_s=5.0)
    with pytest.raises(SettingsError, match=r"link_secret \(from default\): needed with smtp_host"):
        load_settings(environ={}, smtp_host="127.0.0.1")
