"""docker-compose.yml describes Pulse's stack; check it against Pulse's settings and CLI.

No container engine is needed: the file is parsed and compared with the code it
describes, so a renamed setting or subcommand breaks this test, not a deployment.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml

from pulse.cli import build_parser
from pulse.settings import LOCAL_KAFKA, LOCAL_REDIS, Settings, load_settings

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
INFRA_SERVICES = ("kafka", "redis")
PULSE_SERVICES = ("topics", "dataflow", "api", "dispatcher")
SETTINGS_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Settings))


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data: Any = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), f"{COMPOSE_FILE} is not a YAML mapping"
    found: Any = data.get("services")
    assert isinstance(found, dict), f"{COMPOSE_FILE} has no 'services' mapping"
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either compose form (mapping or KEY=VALUE list)."""
    raw: Any = service.get("environment", {})
    if isinstance(raw, list):
        pairs = (str(item).partition("=") for item in raw)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def _published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs from short ("[ip:]host:container") or long syntax."""
    pairs = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        assert len(parts) >= 2, f"port {entry!r} publishes no host port"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def _command(service: dict[str, Any]) -> list[str]:
    command: Any = service.get("command")
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _pulse_args(name: str, service: dict[str, Any]) -> list[str]:
    argv = _command(service)
    assert argv and argv[0] == "pulse", f"{name}: command {argv} does not start with 'pulse'"
    return argv[1:]


def _advertised(kafka: dict[str, Any], listener: str) -> str:
    advertised = _environment(kafka).get("KAFKA_ADVERTISED_LISTENERS", "")
    for entry in advertised.split(","):
        name, _, address = entry.strip().partition("://")
        if name == listener:
            return address
    raise AssertionError(f"kafka advertises no {listener} listener in {advertised!r}")


def test_all_services_are_defined(services: dict[str, Any]) -> None:
    for name in (*INFRA_SERVICES, *PULSE_SERVICES):
        assert name in services, f"service {name!r} missing from {COMPOSE_FILE.name}"


@pytest.mark.parametrize("name", PULSE_SERVICES)
def test_pulse_variables_are_settings_fields(services: dict[str, Any], name: str) -> None:
    env = _environment(services[name])
    pulse_vars = {key: value for key, value in env.items() if key.startswith("PULSE_")}
    assert pulse_vars, f"{name}: sets no PULSE_* variables"
    for key in pulse_vars:
        field = key.removeprefix("PULSE_").lower()
        assert key == f"PULSE_{field.upper()}", f"{name}: {key} is not upper-case"
        assert field in SETTINGS_FIELDS, (
            f"{name}: {key} names no Settings field (known: {sorted(SETTINGS_FIELDS)})"
        )
    settings = load_settings(environ=pulse_vars)
    assert settings.kafka_bootstrap, f"{name}: PULSE_KAFKA_BOOTSTRAP must name the kafka service"
    assert settings.redis_url, f"{name}: PULSE_REDIS_URL must point at the redis service"


@pytest.mark.parametrize("name", PULSE_SERVICES)
def test_pulse_services_build_the_image_and_wait(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service.get("build") == ".", f"{name}: must build the repository's Dockerfile"
    depends: Any = service.get("depends_on", {})
    assert isinstance(depends, dict), f"{name}: depends_on must use the long form"
    for infra in INFRA_SERVICES:
        condition = depends.get(infra, {}).get("condition")
        assert condition == "service_healthy", f"{name}: must wait for {infra} to be healthy"
    if name != "topics":
        condition = depends.get("topics", {}).get("condition")
        assert condition == "service_completed_successfully", (
            f"{name}: must start after the topics job completed successfully"
        )


def test_infrastructure_publishes_pulse_local_ports(services: dict[str, Any]) -> None:
    kafka_port = int(LOCAL_KAFKA.rsplit(":", 1)[1])
    redis_port = urlsplit(LOCAL_REDIS).port
    kafka_published = [host for host, _ in _published_ports(services["kafka"])]
    redis_published = [host for host, _ in _published_ports(services["redis"])]
    assert kafka_port in kafka_published, (
        f"kafka publishes {kafka_published}, not LOCAL_KAFKA's port {kafka_port}"
    )
    assert redis_port in redis_published, (
        f"redis publishes {redis_published}, not LOCAL_REDIS's port {redis_port}"
    )
    for name in INFRA_SERVICES:
        assert "healthcheck" in services[name], f"{name}: needs a healthcheck for depends_on"


def test_api_port_matches_command_and_default(services: dict[str, Any]) -> None:
    api = services["api"]
    args = build_parser().parse_args(_pulse_args("api", api))
    default = Settings().api_port
    assert args.port == default, f"api command port {args.port} != Settings().api_port {default}"
    containers = [container for _, container in _published_ports(api)]
    assert args.port in containers, (
        f"api listens on {args.port} but publishes container ports {containers}"
    )
    assert args.host == "0.0.0.0", "api must bind 0.0.0.0 to be reachable from outside"


def test_kafka_bootstrap_is_the_advertised_plaintext_listener(services: dict[str, Any]) -> None:
    advertised = _advertised(services["kafka"], "PLAINTEXT")
    host = advertised.rsplit(":", 1)[0]
    assert host == "kafka", f"PLAINTEXT listener {advertised!r} must use the service name"
    for name in PULSE_SERVICES:
        bootstrap = _environment(services[name]).get("PULSE_KAFKA_BOOTSTRAP")
        assert bootstrap == advertised, (
            f"{name}: PULSE_KAFKA_BOOTSTRAP={bootstrap!r} != kafka's advertised {advertised!r}"
        )


def test_redis_url_points_at_redis_service(services: dict[str, Any]) -> None:
    for name in PULSE_SERVICES:
        url = _environment(services[name]).get("PULSE_REDIS_URL", "")
        host = urlsplit(url).hostname
        assert host == "redis", f"{name}: PULSE_REDIS_URL={url!r} host is not the redis service"


def test_commands_are_real_pulse_subcommands(services: dict[str, Any]) -> None:
    parser = build_parser()
    expected = {"topics": "services", "dataflow": "run", "api": "api", "dispatcher": "dispatch"}
    for name, subcommand in expected.items():
        argv = _pulse_args(name, services[name])
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"{name}: 'pulse {shlex.join(argv)}' does not parse") from exc
        assert args.command == subcommand, f"{name}: runs {args.command!r}, not {subcommand!r}"
    assert parser.parse_args(_pulse_args("topics", services["topics"])).action == "up"
    dataflow = parser.parse_args(_pulse_args("dataflow", services["dataflow"]))
    volumes = [str(v) for v in services["dataflow"].get("volumes", [])]
    assert any(v.split(":")[1] == dataflow.recovery_dir for v in volumes if ":" in v), (
        f"dataflow: no volume mounted at its recovery dir {dataflow.recovery_dir!r}"
    )
