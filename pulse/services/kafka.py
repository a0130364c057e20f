"""A real Apache Kafka broker (KRaft, single node) run from Maven Central's jars.

No Docker engine runs on our machines, so Pulse fetches the official broker
jars once with Maven into ``<cache>/kafka/lib``, formats storage once under
``<cache>/kafka/data`` (so data survives restarts) and runs ``kafka.Kafka``
with the JVM already on the machine.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import re
import shutil
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pulse.services.process import (
    ServiceError,
    ServiceStatus,
    pid_alive,
    port_open,
    read_pid,
    terminate,
)
from pulse.settings import Settings

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
_NEEDLE = "kafka.Kafka"
_RESOURCES = resources.files("pulse") / "resources" / "kafka"


class LocalKafka:
    """The broker Pulse owns under ``<cache>/kafka``."""

    def __init__(self, cache_dir: str | Path, port: int = 9092) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.home = Path(cache_dir) / "kafka"
        self.lib = self.home / "lib"
        self.data = self.home / "data"
        self.logs = self.home / "logs"
        self.config = self.home / "server.properties"
        self.pidfile = self.home / "kafka.pid"

    # -- installation ----------------------------------------------------

    def installed(self) -> bool:
        return (self.lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()

    def install(self) -> None:
        """Fetch the broker jars with Maven once (about 43 MB). A lock file keeps
        two processes starting at once (`make demo` beside `make test`, two
        test workers) from fetching into the same folder."""
        if self.installed():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.installed():  # the other one may have fetched them meanwhile
                self._fetch()

    def _fetch(self) -> None:
        java_major()  # fail early with a readable message
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError(
                "Maven (mvn) is not installed: it fetches Kafka's jars once; "
                "install it with `apt-get install maven`"
            )
        pom = self.home / "pom.xml"
        pom.write_bytes((_RESOURCES / "pom.xml").read_bytes())
        tmp = self.home / "lib.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetching Apache Kafka %s jars with Maven into %s", KAFKA_VERSION, self.lib)
        started = time.monotonic()
        proc = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise ServiceError(
                "Maven could not fetch Kafka's jars (is Maven Central reachable?): "
                + " | ".join(tail)
            )
        shutil.rmtree(self.lib, ignore_errors=True)
        tmp.rename(self.lib)
        log.info("Kafka jars ready in %.1f s", time.monotonic() - started)

    def _render_config(self) -> None:
        template = (_RESOURCES / "server.properties.template").read_text()
        text = (
            template.replace("{data_dir}", str(self.data.resolve()))
            .replace("{port}", str(self.port))
            .replace("{controller_port}", str(self.port + 1))
        )
        self.config.write_text(text)

    def _format_storage(self) -> None:
        """Format the KRaft log directory once; later starts reuse it."""
        if (self.data / "meta.properties").exists():
            return
        cluster_id = _cluster_id()
        self.data.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [
                _java(),
                "-cp",
                f"{self.lib}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed: {proc.stderr.strip()[-400:]}")

    # -- lifecycle -------------------------------------------------------

    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid_alive(pid, _NEEDLE) else None

    def start(self, timeout_s: float = 90.0) -> bool:
        """Start the broker unless it already runs; True when this call started it."""
        if self.pid() is not None:
            return False
        if port_open("127.0.0.1", self.port):
            log.info("a Kafka broker already answers on %s: reusing it", self.address)
            return False
        self.install()
        self.logs.mkdir(parents=True, exist_ok=True)
        self._render_config()
        self._format_storage()
        cmd = [
            _java(),
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs}",
            f"-Dlog4j2.configurationFile={_RESOURCES / 'log4j2.properties'}",
            "-cp",
            f"{self.lib}/*",
            "kafka.Kafka",
            str(self.config),
        ]
        with open(self.logs / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the terminal that ran `pulse services up`
            )
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(
                    f"Kafka exited with code {proc.returncode} during start-up; "
                    f"see {self.logs / 'server.log'}"
                )
            if metadata_ok(self.address, timeout_s=1.0):
                return True
            time.sleep(0.3)
        raise ServiceError(
            f"Kafka did not answer a metadata request within {timeout_s:.0f} s; "
            f"see {self.logs / 'server.log'}"
        )

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        terminate(pid, _NEEDLE, grace_s=30)
        self.pidfile.unlink(missing_ok=True)
        return True


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    One in 64 such ids starts with "-", which the storage tool's argument parser
    takes for an option (seen in CI): draw again until it does not.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def metadata_ok(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})  # type: ignore[dict-item]
    try:
        admin.list_topics(timeout=timeout_s)
        return True
    except KafkaException:
        return False


_quiet = logging.getLogger("pulse.kafka.librdkafka")
_quiet.setLevel(logging.CRITICAL)


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create Pulse's topics with the configured partitions; returns those created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka, "logger": _quiet})  # type: ignore[dict-item]
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [t for t in settings.all_topics if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=settings.partitions, replication_factor=1) for t in wanted],
        operation_timeout=timeout_s,
    )
    created = []
    for topic, fut in futures.items():
        try:
            fut.result()
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise ServiceError(f"creating topic {topic} failed: {exc}") from exc
    _wait_for_leaders(admin, wanted, timeout_s)
    return created


def require_topics(settings: Settings, process: str) -> None:
    """Check at start-up that Pulse's topics exist, before any client uses them.

    A Bytewax source on a missing topic dies with a Rust panic and a consumer
    commits nothing it can name; a new ``topic_prefix`` or an existing Kafka
    must instead get one line saying what is missing. When Pulse owns the
    broker it simply creates the topics; on someone else's Kafka it does not
    decide partitions for them, and names the command that does.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka, "logger": _quiet})  # type: ignore[dict-item]
    try:
        existing = set(admin.list_topics(timeout=10).topics)
    except KafkaException as exc:
        hint = (
            "start it with `pulse services up`"
            if settings.kafka_managed
            else "check PULSE_KAFKA_BOOTSTRAP"
        )
        raise ServiceError(
            f"{process}: no Kafka broker answers at {settings.kafka} ({hint})"
        ) from exc
    missing = [t for t in settings.all_topics if t not in existing]
    if not missing:
        return
    if settings.kafka_managed:
        created = ensure_topics(settings)
        log.info("%s: created topics %s", process, ", ".join(created))
        return
    others = f" (and {', '.join(missing[1:])})" if len(missing) > 1 else ""
    raise ServiceError(
        f"{process}: topic {missing[0]}{others} does not exist on the Kafka at "
        f"{settings.kafka}: create Pulse's topics with `pulse services up` (with "
        f"PULSE_KAFKA_BOOTSTRAP set it only creates topics, {settings.partitions} "
        f"partitions each), or with kafka-topics.sh --create --topic {missing[0]} "
        f"--partitions {settings.partitions}"
    )


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        if all(
            t in md.topics
            and md.topics[t].partitions
            and all(p.leader >= 0 for p in md.topics[t].partitions.values())
            for t in topics
        ):
            return
        time.sleep(0.1)
    raise ServiceError(f"topics {topics} have no leader after {timeout_s:.0f} s")


def status(settings: Settings) -> ServiceStatus:
    if not settings.kafka_managed:
        ok = metadata_ok(settings.kafka)
        return ServiceStatus("kafka", settings.kafka, ok, "?", None, "external")
    local = LocalKafka(settings.cache_dir, settings.local_kafka_port)
    pid = local.pid()
    reachable = pid or port_open("127.0.0.1", local.port)
    running = metadata_ok(local.address, timeout_s=1.0) if reachable else False
    owner = "pulse" if pid else ("external" if running else "-")
    version = KAFKA_VERSION if pid else ("?" if running else "-")
    return ServiceStatus("kafka", local.address, running, version, pid, owner)


def java_major() -> int:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "Java 17 or newer is not installed: Kafka needs it; "
            "install it with `apt-get install openjdk-17-jre-headless`"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < 17:
        raise ServiceError(
            f"Java {major} found, Kafka 4 needs Java 17 or newer: "
            "install it with `apt-get install openjdk-17-jre-headless`"
        )
    return major


def _java() -> str:
    return shutil.which("java") or "java"
