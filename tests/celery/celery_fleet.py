"""Real ``celery worker`` processes for the bridge tests, on an isolated Redis key prefix.

``Fleet.start(name, ...)`` runs ``celery -A bridge_app worker`` from this folder with the
test's broker, key prefix, PostgreSQL schema and log file in its environment, and waits
for its ``ready`` line. ``stop_all`` stops them (SIGTERM, then SIGKILL), and
``flush_prefix`` deletes every Redis key of the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


class Fleet:
    def __init__(self, tmp_path: Path, *, broker: str, prefix: str, url: str, schema: str) -> None:
        self.dir = tmp_path
        self.log = tmp_path / "steps.log"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.broker = broker
        self.prefix = prefix
        self.url = url
        self.schema = schema
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        # tests/django's conftest names its settings module for the whole session, and
        # Celery loads Django's settings whenever that variable is set.
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE), str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update(
            BRIDGE_LOG=str(self.log),
            BRIDGE_GATES=str(self.gates),
            BRIDGE_BROKER=self.broker,
            BRIDGE_PREFIX=self.prefix,
            BRIDGE_PG_URL=self.url,
            BRIDGE_PG_SCHEMA=self.schema,
        )
        env.update(extra)
        return env

    def start(
        self,
        name: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        queues: str | None = None,
        **extra: str,
    ) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bridge_app",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname={name}@%h",
        ]
        if queues:
            command.append(f"--queues={queues}")
        with (self.dir / f"{name}.out").open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=HERE,
                env=self.env(BRIDGE_WORKER=name, **extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        wait_until(
            lambda: (
                any(line.startswith(f"ready {name} ") for line in self.lines())
                or process.poll() is not None
            ),
            60,
            f"worker {name} ready",
        )
        if process.poll() is not None:
            raise AssertionError(f"worker {name} exited: {self.output(name)}")
        return process

    def output(self, name: str) -> str:
        return (self.dir / f"{name}.out").read_text(errors="replace")

    def open_gate(self, name: str) -> None:
        (self.gates / name).touch()

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def started(self) -> Counter[tuple[str, str]]:
        """How often each (instance, step) body started."""
        return Counter(
            (line.split()[0], line.split()[1]) for line in self.lines() if line.endswith(" started")
        )

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pool_children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a prefork worker's pool processes)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


class TcpProxy:
    """A TCP proxy on a fixed local port that can be stopped (an outage) and started again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
