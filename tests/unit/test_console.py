"""The console's pure parts: sessions and CSRF, lift with its interval, the
last hour from samples, the rules list, the candidate set and its diff."""

from __future__ import annotations

from api.auth import KeyRing
from api.console import history
from api.console.lift import Lift, lift_of
from api.console.rules import LiveSet, candidate, describe_trigger, diff, rows
from api.console.session import Sessions
from engine.rules.validate import load, rule_set_files
from pulse.rules_files import rule_files
from pulse.settings import load_settings


def sessions(**keys: tuple[str, ...]) -> Sessions:
    ring = KeyRing(keys.get("write", ()), keys.get("read", ()), keys.get("admin", ()))
    return Sessions(ring, sum(keys.values(), ()))


def test_a_read_or_admin_key_signs_in_and_a_write_key_does_not() -> None:
    s = sessions(write=("w",), read=("r",), admin=("a",))
    assert s.sign_in("w") is None and s.sign_in("nope") is None
    read, admin = s.viewer(s.sign_in("r")), s.viewer(s.sign_in("a"))
    assert read is not None and read.role == "read" and not read.may("admin")
    assert admin is not None and admin.role == "admin" and admin.may("admin")


def test_a_forged_expired_or_foreign_token_is_no_session() -> None:
    s = sessions(read=("r",))
    token = s.sign_in("r", now=1000.0)
    assert token is not None
    _role, expires, mac = token.split(".")
    assert s.viewer(f"admin.{expires}.{mac}", now=1000.0) is None  # role changed
    assert s.viewer(token, now=1000.0 + 9 * 3600) is None  # expired
    assert sessions(read=("other",)).viewer(token, now=1000.0) is None  # other keys
    assert s.viewer(token, now=1000.0) is not None


def test_csrf_token_is_tied_to_the_session() -> None:
    s = sessions(read=("r",))
    one = s.viewer(s.sign_in("r", now=1.0), now=1.0)
    two = s.viewer(s.sign_in("r", now=2.0), now=2.0)
    assert one is not None and two is not None
    assert s.csrf_ok(one, s.csrf(one))
    assert not s.csrf_ok(one, s.csrf(two)) and not s.csrf_ok(one, None)


def test_an_api_without_keys_opens_the_console_to_everything() -> None:
    s = sessions()
    viewer = s.viewer(None)
    assert viewer is not None and viewer.open and viewer.may("admin")


def test_lift_is_the_difference_of_rates_with_a_95_percent_interval() -> None:
    lift = lift_of(
        {"fired": 1000, "converted:treated": 120, "held_out": 1000, "converted:holdout": 80}
    )
    assert lift.difference is not None and abs(lift.difference - 0.04) < 1e-12
    assert lift.interval is not None
    low, high = lift.interval
    # se = sqrt(.12*.88/1000 + .08*.92/1000) = 0.013387; 1.96 se = 0.026238
    assert abs(low - (0.04 - 0.026238)) < 1e-5 and abs(high - (0.04 + 0.026238)) < 1e-5
    assert lift.describe() == "+4.0 pts [+1.4, +6.6]"


def test_lift_says_when_it_cannot_tell() -> None:
    assert Lift(100, 5, 0, 0).describe() == "no hold-out"
    assert Lift(5, 1, 5, 0).interval is None
    assert "not enough data" in Lift(5, 1, 5, 0).describe()


def test_last_hour_is_totals_less_the_oldest_sample() -> None:
    samples = [
        {"t": 100.0, "rules": {"a": {"fired": 10, "suppressed:quiet_hours": 2}}},
        {"t": 110.0, "rules": {"a": {"fired": 12}}},
    ]
    now = {"a": {"fired": 15, "suppressed:quiet_hours": 5, "suppressed:cap": 1}, "b": {"fired": 3}}
    hour = history.last_hour(now, samples)
    assert hour.since == 100.0
    assert hour.fired == {"a": 5, "b": 3}
    assert hour.suppressed == {"a": {"quiet_hours": 3, "cap": 1}, "b": {}}
    # A total below the sample's (the dataflow's state started again) counts from zero.
    assert history.last_hour({"a": {"fired": 4}}, samples).fired == {"a": 4}
    assert history.last_hour(now, []).since is None


def test_series_are_rates_between_samples() -> None:
    samples = [
        {"t": 0.0, "in": 0, "processed": 0, "rules": {"a": {"fired": 0}}},
        {"t": 10.0, "in": 100, "processed": 50, "rules": {"a": {"fired": 2}}},
    ]
    s = history.series(samples)
    assert s == {"t": [10.0], "in": [10.0], "processed": [5.0], "fires": {"a": [12.0]}}


def shipped() -> LiveSet:
    files = rule_set_files(rule_files(load_settings(environ={}).rules_dir))
    loaded = load(files)
    assert loaded.rules is not None
    return LiveSet(files, loaded.rules.version, None)


def test_rules_list_has_every_shipped_rule_with_trigger_and_channel() -> None:
    live = shipped()
    found = {r.rule_id: r for r in rows(live, {"abandoned_cart": {"fired": 3}})}
    assert "policy" not in found and len(found) == len(live.files) - 1
    cart = found["abandoned_cart"]
    assert cart.channel == "email" and cart.trigger == "event: add_to_cart"
    assert cart.counts == {"fired": 3} and cart.enabled
    assert describe_trigger({"inactive_for": "60d"}) == "inactive_for: 60d"


def test_a_candidate_replaces_one_file_and_the_diff_shows_only_it() -> None:
    live = shipped()
    text = live.files["abandoned_cart.yaml"].replace("priority: 70", "priority: 71")
    files = candidate(live, "abandoned_cart.yaml", text)
    assert set(files) == set(live.files)
    changes = diff(live, files)
    assert "-priority: 70\n+priority: 71" in changes
    assert changes.count("+++ ") == 1
    assert diff(live, dict(live.files)) == ""
