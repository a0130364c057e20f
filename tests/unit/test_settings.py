"""Settings: defaults < TOML file < PULSE_* environment < explicit options.

Every process builds its configuration here, and child processes receive it
back through ``as_environ``; a lossy step means a child silently runs with
different settings than its parent. Errors must name the field and where the
bad value came from, because that is all an operator sees.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulse.settings import Settings, SettingsError, load_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pulse.toml"
    path.write_text(text)
    return path


# Defaults --------------------------------------------------------------------


def test_empty_environment_gives_the_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.kafka_bootstrap is None and settings.kafka_managed
    assert settings.redis_url is None and settings.redis_managed
    assert settings.kafka == "127.0.0.1:9092"
    assert settings.redis == "redis://127.0.0.1:6379/0"
    assert settings.partitions == 4
    assert settings.workers == 1
    assert settings.start_from == "earliest"
    assert (settings.rules_activation_s, settings.event_lateness_s) == (2.0, 2.0)
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.write_keys == () and settings.read_keys == ()
    assert settings.redis_persistence is True
    assert settings.log_level == "INFO"


def test_the_process_environment_is_not_read_when_one_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_PARTITIONS", "9")
    assert load_settings(environ={}).partitions == 4


def test_local_ports_drive_the_managed_addresses() -> None:
    settings = load_settings(
        environ={"PULSE_LOCAL_KAFKA_PORT": "19092", "PULSE_LOCAL_REDIS_PORT": "16379"}
    )
    assert settings.kafka == "127.0.0.1:19092"
    assert settings.redis == "redis://127.0.0.1:16379/0"


def test_external_servers_are_not_managed() -> None:
    settings = load_settings(
        environ={
            "PULSE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "PULSE_REDIS_URL": "rediss://cache:6380/2",
        }
    )
    assert not settings.kafka_managed and settings.kafka == "k1:9092,k2:9092"
    assert not settings.redis_managed and settings.redis == "rediss://cache:6380/2"


def test_derived_names_use_the_prefixes(tmp_path: Path) -> None:
    settings = load_settings(environ={"PULSE_TOPIC_PREFIX": "t1", "PULSE_CACHE_DIR": str(tmp_path)})
    assert settings.topic("x") == "t1.x"
    assert settings.events_topic == "t1.events"
    assert settings.events_dlq_topic == "t1.events.dlq"
    assert settings.triggers_topic == "t1.triggers"
    assert settings.triggers_dlq_topic == "t1.triggers.dlq"
    assert settings.control_topic == "t1.control"
    assert settings.nba_topic == "t1.nba"
    assert set(settings.all_topics) == {
        "t1.events",
        "t1.events.dlq",
        "t1.triggers",
        "t1.triggers.dlq",
        "t1.control",
        "t1.decisions",
        "t1.nba",
    }
    assert settings.effective_recovery_dir == tmp_path / "recovery" / "t1"
    explicit = load_settings(environ={"PULSE_RECOVERY_DIR": str(tmp_path / "r")})
    assert explicit.effective_recovery_dir == tmp_path / "r"


# Environment variables -------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("PULSE_PARTITIONS", "12", "partitions", 12),
        ("PULSE_API_PORT", "9000", "api_port", 9000),
        ("PULSE_SNAPSHOT_INTERVAL_S", "2.5", "snapshot_interval_s", 2.5),
        ("PULSE_EVENT_LATENESS_S", "30", "event_lateness_s", 30.0),
        ("PULSE_REDIS_PERSISTENCE", "false", "redis_persistence", False),
        ("PULSE_REDIS_PERSISTENCE", "true", "redis_persistence", True),
        ("PULSE_REDIS_PERSISTENCE", "0", "redis_persistence", False),
        ("PULSE_WRITE_KEYS", "k1", "write_keys", ("k1",)),
        ("PULSE_WRITE_KEYS", "k1, k2 ,,k3", "write_keys", ("k1", "k2", "k3")),
        ("PULSE_READ_KEYS", "", "read_keys", ()),
        ("PULSE_START_FROM", "latest", "start_from", "latest"),
        ("PULSE_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("PULSE_TOPIC_PREFIX", "shop-7", "topic_prefix", "shop-7"),
        ("PULSE_REDIS_URL", "", "redis_url", None),
        ("PULSE_KAFKA_BOOTSTRAP", "", "kafka_bootstrap", None),
    ],
)
def test_environment_overrides_with_type_conversion(
    variable: str, value: str, field: str, expected: object
) -> None:
    actual = getattr(load_settings(environ={variable: value}), field)
    assert actual == expected
    assert type(actual) is type(expected)


def test_unrelated_variables_are_ignored() -> None:
    """Other tools may use the PULSE_ prefix too."""
    settings = load_settings(
        environ={"PULSE_SOMETHING_ELSE": "x", "PARTITIONS": "7", "pulse_partitions": "7"}
    )
    assert settings == Settings()


def test_explicit_options_beat_the_environment() -> None:
    settings = load_settings(
        environ={"PULSE_PARTITIONS": "3", "PULSE_WORKERS": "2"}, partitions=8, workers=None
    )
    assert settings.partitions == 8
    assert settings.workers == 2, "an option left as None does not override"


# TOML file -------------------------------------------------------------------


def test_toml_top_level_keys(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'partitions = 6\nwrite_keys = ["a", "b"]\nstart_from = "latest"\n')
    settings = load_settings(environ={}, config_file=path)
    assert settings.partitions == 6
    assert settings.write_keys == ("a", "b")
    assert settings.start_from == "latest"


def test_toml_pulse_table(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[pulse]\npartitions = 6\nredis_persistence = false\n")
    settings = load_settings(environ={}, config_file=str(path))
    assert settings.partitions == 6
    assert settings.redis_persistence is False


def test_config_file_from_pulse_config_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "workers = 3\n")
    assert load_settings(environ={"PULSE_CONFIG": str(path)}).workers == 3


def test_environment_beats_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "partitions = 6\nworkers = 3\n")
    settings = load_settings(environ={"PULSE_PARTITIONS": "2"}, config_file=path)
    assert settings.partitions == 2
    assert settings.workers == 3


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "partitions = 6\npartitons = 7\n")
    with pytest.raises(SettingsError, match="partitons") as info:
        load_settings(environ={}, config_file=path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(environ={}, config_file=tmp_path / "absent.toml")


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "partitions = = 6\n")
    with pytest.raises(SettingsError, match=str(path)):
        load_settings(environ={}, config_file=path)


def test_invalid_value_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'partitions = "many"\n')
    with pytest.raises(SettingsError, match="partitions") as info:
        load_settings(environ={}, config_file=path)
    assert f"config file {path}" in str(info.value)


# Invalid values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PULSE_PARTITIONS", "abc"),
        ("PULSE_PARTITIONS", "0"),
        ("PULSE_PARTITIONS", "-3"),
        ("PULSE_WORKERS", "1.5"),
        ("PULSE_API_PORT", "0"),
        ("PULSE_SNAPSHOT_INTERVAL_S", "0"),
        ("PULSE_EVENT_LATENESS_S", "-1"),
        ("PULSE_REDIS_URL", "http://localhost:6379"),
        ("PULSE_REDIS_URL", "localhost:6379"),
        ("PULSE_START_FROM", "middle"),
        ("PULSE_LOG_LEVEL", "debug"),
        ("PULSE_REDIS_PERSISTENCE", "maybe"),
        ("PULSE_TOPIC_PREFIX", "has space"),
        ("PULSE_REDIS_PREFIX", "a:b"),
        ("PULSE_TOPIC_PREFIX", ""),
    ],
)
def test_invalid_values_name_the_field_and_the_variable(variable: str, value: str) -> None:
    field = variable.removeprefix("PULSE_").lower()
    with pytest.raises(SettingsError) as info:
        load_settings(environ={variable: value})
    message = str(info.value)
    assert message.startswith(f"{field} (from {variable}): "), message
    assert len(message) > len(f"{field} (from {variable}): "), "the reason is missing"
    assert "\n" not in message


def test_invalid_option_names_the_option() -> None:
    with pytest.raises(SettingsError, match=r"^workers \(from option workers\): "):
        load_settings(environ={}, workers=0)


def test_error_attribution_survives_dollar_dot_in_the_value() -> None:
    with pytest.raises(SettingsError, match=r"^redis_url \(from PULSE_REDIS_URL\)"):
        load_settings(environ={"PULSE_REDIS_URL": "http://host/$.x"})


def test_unknown_option_is_named_readably() -> None:
    with pytest.raises(SettingsError, match=r"^partitons \(from option partitons\): "):
        load_settings(environ={}, partitons=8)


PUSH = {
    "PULSE_PUSH_API_URL": "https://fcm.googleapis.com",
    "PULSE_PUSH_PROJECT_ID": "shop-app",
    "PULSE_PUSH_AUTH_TOKEN": "ya29.secret-token",
    "PULSE_LINK_SECRET": "a-link-secret-of-16+",
}


def test_push_settings_come_from_the_environment_and_the_token_is_masked() -> None:
    settings = load_settings(environ={**PUSH, "PULSE_PUSH_TIMEOUT_S": "2.5"})
    assert (settings.push_api_url, settings.push_project_id) == (
        "https://fcm.googleapis.com",
        "shop-app",
    )
    assert settings.push_timeout_s == 2.5
    assert "ya29.secret-token" not in repr(settings.masked())
    assert load_settings(environ={"PULSE_PUSH_API_URL": ""}).push_api_url is None


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("PULSE_PUSH_PROJECT_ID", r"^push_project_id .*needed with push_api_url"),
        ("PULSE_PUSH_AUTH_TOKEN", r"^push_auth_token .*needed with push_api_url"),
        ("PULSE_LINK_SECRET", r"^link_secret .*needed with push_api_url"),
    ],
)
def test_the_push_channel_needs_its_project_token_and_link_secret(
    missing: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ={k: v for k, v in PUSH.items() if k != missing})


def test_the_push_timeout_must_be_positive_and_within_the_lease() -> None:
    with pytest.raises(SettingsError, match=r"^push_timeout_s .*must be positive"):
        load_settings(environ={**PUSH, "PULSE_PUSH_TIMEOUT_S": "0"})
    with pytest.raises(SettingsError, match=r"^dispatch_lease_s .*longest channel timeout"):
        load_settings(environ={**PUSH, "PULSE_PUSH_TIMEOUT_S": "60"})


# masked() and as_environ() ---------------------------------------------------


def test_masked_hides_keys_and_redis_password() -> None:
    settings = load_settings(
        environ={
            "PULSE_WRITE_KEYS": "wk-0123456789,short",
            "PULSE_READ_KEYS": "rk-abcdefghij",
            "PULSE_REDIS_URL": "redis://user:s3cret@cache.internal:6379/0",
        }
    )
    masked = settings.masked()
    text = repr(masked)
    for secret in ("wk-0123456789", "short", "rk-abcdefghij", "s3cret", "user:"):
        assert secret not in text, secret
    assert masked["write_keys"] == ["wk-0***", "***"]
    assert masked["read_keys"] == ["rk-a***"]
    assert masked["redis_url"] == "redis://***@cache.internal:6379/0"
    assert masked["partitions"] == settings.partitions


def test_masked_leaves_a_password_free_url_alone() -> None:
    settings = load_settings(environ={"PULSE_REDIS_URL": "redis://cache:6379/0"})
    assert settings.masked()["redis_url"] == "redis://cache:6379/0"


def test_masked_is_json_serializable() -> None:
    assert msgspec.json.decode(msgspec.json.encode(Settings().masked())) == Settings().masked()


def test_as_environ_uses_pulse_variables() -> None:
    env = load_settings(
        environ={"PULSE_PARTITIONS": "7", "PULSE_REDIS_PERSISTENCE": "false"}
    ).as_environ()
    assert env["PULSE_PARTITIONS"] == "7"
    assert env["PULSE_REDIS_PERSISTENCE"] == "false"
    assert "PULSE_KAFKA_BOOTSTRAP" not in env, "unset (managed) servers stay unset"
    assert all(k.startswith("PULSE_") and isinstance(v, str) for k, v in env.items())


def _without_keys(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, write_keys=(), read_keys=())


names = st.from_regex(r"[a-z][a-z0-9_.-]{0,15}", fullmatch=True)
settings_variants = st.builds(
    load_settings,
    environ=st.just({}),
    kafka_bootstrap=st.none() | st.just("broker:9092"),
    redis_url=st.none() | st.just("redis://:pw@cache:6379/1"),
    topic_prefix=names,
    redis_prefix=names,
    partitions=st.integers(1, 64),
    recovery_dir=st.none() | st.just("/tmp/recovery"),
    snapshot_interval_s=st.floats(0.001, 1e6),
    workers=st.integers(1, 16),
    start_from=st.sampled_from(["earliest", "latest"]),
    event_lateness_s=st.floats(0, 1e7),
    redis_persistence=st.booleans(),
    log_level=st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"]),
)


@given(settings_variants)
def test_as_environ_round_trips_every_scalar_field(settings: Settings) -> None:
    """The key tuples are covered separately below."""
    restored = load_settings(environ=settings.as_environ())
    assert _without_keys(restored) == _without_keys(settings)


@pytest.mark.parametrize("keys", [(), ("k1",), ("k1", "k2")])
def test_as_environ_round_trips_the_key_lists(keys: tuple[str, ...]) -> None:
    settings = load_settings(environ={}, write_keys=keys, read_keys=keys)
    assert load_settings(environ=settings.as_environ()) == settings
