"""A real Redis server from Debian's ``redis-server`` package on loopback."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

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

_NEEDLE = "redis-server"


class LocalRedis:
    def __init__(self, cache_dir: str | Path, port: int = 6379) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.home = Path(cache_dir) / "redis"
        self.pidfile = self.home / "redis.pid"
        self.logfile = self.home / "redis.log"

    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid_alive(pid, _NEEDLE) else None

    def start(self, persistence: bool, timeout_s: float = 20.0) -> bool:
        """Start redis-server unless one runs; True when this call started it.

        With persistence, an append-only file fsynced every second plus RDB
        snapshots keep the demo's data across a SIGKILL; without (tests), Redis
        never touches the disk.
        """
        if self.pid() is not None:
            return False
        if port_open("127.0.0.1", self.port):
            log.info("a Redis server already answers on %s: reusing it", self.url)
            return False
        binary = _ensure_installed()
        self.home.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--protected-mode",
            "yes",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile.resolve()),
            "--logfile",
            str(self.logfile.resolve()),
            "--dir",
            str(self.home.resolve()),
        ]
        if persistence:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "300 1 60 10000"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.pidfile.unlink(missing_ok=True)
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ServiceError(f"redis-server failed to start: {proc.stderr.strip()[-300:]}")
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return True
            except redis.exceptions.BusyLoadingError:
                pass  # replaying the append-only file after a crash
            except redis.exceptions.ConnectionError:
                pass
            time.sleep(0.1)
        raise ServiceError(
            f"Redis did not answer PING within {timeout_s:.0f} s; see {self.logfile}"
        )

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        terminate(pid, _NEEDLE, grace_s=20)
        self.pidfile.unlink(missing_ok=True)
        return True


def _ensure_installed() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise ServiceError(
            "redis-server is not installed: run `sudo apt-get install redis-server` "
            "(or set PULSE_REDIS_URL to an existing Redis)"
        )
    log.info("installing Debian's redis-server package")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise ServiceError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}")
    # Debian's package starts its own service where systemd runs; we run our own.
    subprocess.run(["service", "redis-server", "stop"], capture_output=True)
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError("redis-server is still missing after apt-get install")
    return found


def status(settings: Settings) -> ServiceStatus:
    address = settings.redis
    local = LocalRedis(settings.cache_dir, settings.local_redis_port)
    pid = local.pid() if settings.redis_managed else None
    try:
        info = redis.Redis.from_url(address, socket_timeout=1, socket_connect_timeout=1).info(
            "server"
        )
        version = str(info.get("redis_version", "?"))
        persistence = redis.Redis.from_url(address, socket_timeout=1).config_get("appendonly")
        detail = "aof on" if persistence.get("appendonly") == "yes" else "no persistence"
        running = True
    except redis.exceptions.RedisError:
        version, detail, running = "-", "", False
    owner = "pulse" if pid else ("external" if running else "-")
    return ServiceStatus("redis", address, running, version, pid, owner, detail)
