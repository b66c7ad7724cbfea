"""Provision, start and stop a local Apache Kafka (KRaft) broker and Apicurio Registry.

Both come from Maven Central into ``<local_home>`` (``~/.cache/stocktwits-pulse`` by
default): the broker's jars through ``embedded/pom.xml``, the registry as the
ready-to-run Quarkus archive. Each *instance* (``default`` for ``pulse local up``, a
throwaway one per test run) has its own ports, data and logs under
``<local_home>/instances/<name>/`` and runs detached; PIDs are kept in ``state.json``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from settings import Settings

KAFKA_VERSION = "4.3.1"
APICURIO_VERSION = "3.3.3"
APICURIO_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
EMBEDDED_DIR = Path(__file__).resolve().parent

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The local stack cannot be provisioned or started; the message says what to do."""


@dataclass(frozen=True)
class Ports:
    kafka: int
    controller: int
    registry: int


@dataclass(frozen=True)
class Endpoints:
    bootstrap_servers: str
    schema_registry_url: str
    kafka_log: str
    registry_log: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports() -> Ports:
    return Ports(free_port(), free_port(), free_port())


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


JAVA_HINT = "a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
REGISTRY_JAVA = 21  # Apicurio Registry 3.3 is built for Java 21


def java_major(java: str) -> int:
    """Major version of a ``java`` binary (``17`` for 17.0.15), 0 if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@cache
def find_java(min_major: int) -> str:
    """A ``java`` of at least ``min_major``: $JAVA_HOME, PATH, then /usr/lib/jvm/*."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(shutil.which("java") or "java")
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java"))
    for java in candidates:
        if java_major(java) >= min_major:
            return java
    if min_major <= 17:
        raise StackError(f"no Java {min_major}+ found: install {JAVA_HINT} and retry.")
    raise StackError(
        f"Apicurio Registry {APICURIO_VERSION} needs Java {min_major}+, found none "
        "(looked at $JAVA_HOME, PATH, /usr/lib/jvm): install a JDK 21+ "
        "(e.g. apt-get install openjdk-21-jre-headless or Temurin 21) and retry."
    )


def _require(tool: str, package_hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"`{tool}` not found on PATH: install {package_hint} and retry.")
    return path


def _run(cmd: list[str], what: str, log_file: Path) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    with log_file.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise StackError(f"{what} failed (exit {proc.returncode}); see {log_file}")


def _alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and is ours (its command line names our instance dir)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


class LocalStack:
    """One instance of the embedded broker + registry."""

    def __init__(self, home: Path, name: str = "default", ports: Ports | None = None) -> None:
        self.home = home.expanduser()
        self.name = name
        self.dir = self.home / "instances" / name
        self.kafka_home = self.home / f"kafka-{KAFKA_VERSION}"
        self.registry_home = self.home / f"apicurio-registry-{APICURIO_VERSION}"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        saved = self._load_state().get("ports")
        self.ports = ports or (Ports(**saved) if saved else None)

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "default") -> LocalStack:
        ports = Ports(
            settings.local_kafka_port,
            settings.local_controller_port,
            settings.local_registry_port,
        )
        return cls(settings.local_home_path, name, ports)

    # --- provisioning ---------------------------------------------------------------------
    @property
    def provisioned(self) -> bool:
        return (self.kafka_home / ".complete").exists() and (
            self.registry_home / ".complete"
        ).exists()

    def provision(self) -> None:
        """Fetch the broker jars and the registry archive from Maven Central, once."""
        self._fetch(
            self.kafka_home,
            f"Apache Kafka {KAFKA_VERSION}",
            lambda tmp: ["dependency:copy-dependencies", "-DincludeScope=runtime",
                         f"-Dkafka.version={KAFKA_VERSION}", f"-DoutputDirectory={tmp / 'libs'}"],
            expect="libs",
        )  # fmt: skip
        self._fetch(
            self.registry_home,
            f"Apicurio Registry {APICURIO_VERSION}",
            lambda tmp: ["dependency:unpack", f"-Dartifact={APICURIO_ARTIFACT}",
                         f"-DoutputDirectory={tmp}", "-Dmdep.overWriteReleases=true"],
            expect="quarkus-run.jar",
        )  # fmt: skip

    def _fetch(
        self, target: Path, what: str, goal: Callable[[Path], list[str]], expect: str
    ) -> None:
        """Run one Maven goal into ``<target>.partial`` and rename it into place when whole,
        so an interrupted download is never mistaken for a finished one."""
        if (target / ".complete").exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        find_java(17)
        mvn = _require("mvn", "Apache Maven (e.g. apt-get install maven)")
        mvn_log = self.home / "maven.log"
        print(f"Fetching {what} from Maven Central (log: {mvn_log}) …")
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _run(
            [mvn, "-q", "-B", "-f", str(EMBEDDED_DIR / "pom.xml"), *goal(tmp),
             f"-Dpulse.build.dir={self.home / 'maven-build'}"],
            f"maven ({what})", mvn_log,
        )  # fmt: skip
        if not (tmp / expect).exists():
            raise StackError(f"{what}: Maven finished but {tmp / expect} is missing; see {mvn_log}")
        (tmp / ".complete").write_text(what)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)

    # --- state ----------------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def _load_state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, **changes: object) -> None:
        state = {**self._load_state(), **changes}
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_file)  # atomic: a concurrent `status` never reads half a file

    @property
    def endpoints(self) -> Endpoints:
        assert self.ports is not None
        return Endpoints(
            bootstrap_servers=f"127.0.0.1:{self.ports.kafka}",
            schema_registry_url=f"http://127.0.0.1:{self.ports.registry}/apis/ccompat/v7",
            kafka_log=str(self.dir / "kafka.log"),
            registry_log=str(self.dir / "registry.log"),
        )

    def running(self) -> dict[str, bool]:
        state = self._load_state()
        marker = str(self.dir)
        return {
            "kafka": _alive(state.get("kafka_pid"), marker),
            "registry": _alive(state.get("registry_pid"), marker),
        }

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"instance": self.name, "dir": str(self.dir), **self.running()}
        if self.ports:
            out.update(asdict(self.endpoints))
        return out

    # --- lifecycle ------------------------------------------------------------------------
    def up(self, timeout_s: float = 180.0) -> Endpoints:
        """Start what is not running (a second call is a no-op) and wait until both answer."""
        if self.ports is None:
            self.ports = free_ports()
        self.provision()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save_state(ports=asdict(self.ports))
        deadline = time.monotonic() + timeout_s
        running = self.running()
        if not running["kafka"]:
            self._start_kafka()
        self._wait_kafka(deadline)
        if not running["registry"]:
            self._start_registry()
        self._wait_registry(deadline)
        return self.endpoints

    def down(self, timeout_s: float = 30.0, only: str | None = None) -> None:
        """Stop registry then broker (or ``only`` "kafka" / "registry"): SIGTERM, and SIGKILL
        whatever ignores it."""
        state = self._load_state()
        marker = str(self.dir)
        keys = ("registry_pid", "kafka_pid") if only is None else (f"{only}_pid",)
        for key in keys:
            pid = state.get(key)
            if not _alive(pid, marker):
                continue
            os.killpg(pid, signal.SIGTERM)
            end = time.monotonic() + timeout_s
            while _alive(pid, marker) and time.monotonic() < end:
                _reap(pid)
                time.sleep(0.2)
            if _alive(pid, marker):
                log.warning("%s %d ignored SIGTERM for %.0fs; killing", key, pid, timeout_s)
                os.killpg(pid, signal.SIGKILL)
                _reap(pid)
            self._save_state(**{key: None})

    def destroy(self) -> None:
        """Stop and delete this instance's data (not the shared downloads)."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- kafka ----------------------------------------------------------------------------
    def _kafka_properties(self) -> Path:
        assert self.ports is not None
        p = self.ports
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{p.controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{p.kafka},CONTROLLER://127.0.0.1:{p.controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p.kafka}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.dir / "kafka-data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.backoff.ms": "1000",  # compaction visible within seconds locally
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
        }
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java(self, heap: str, min_major: int = 17) -> list[str]:
        java = find_java(min_major)
        return [java, f"-Xmx{heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]

    def _start_kafka(self) -> None:
        props = self._kafka_properties()
        data = self.dir / "kafka-data"
        kafka_log = self.dir / "kafka.log"
        classpath = str(self.kafka_home / "libs" / "*")
        log4j = f"-Dlog4j2.configurationFile={EMBEDDED_DIR / 'log4j2.properties'}"
        if not (data / "meta.properties").exists():
            state = self._load_state()
            cluster_id = state.get("cluster_id") or new_cluster_id()
            self._save_state(cluster_id=cluster_id)
            _run(
                [*self._java("256m"), log4j, "-cp", classpath, "kafka.tools.StorageTool",
                 "format", "-t", cluster_id, "-c", str(props), "-g"],
                "kafka storage format", kafka_log,
            )  # fmt: skip
        pid = self._spawn(
            "kafka_pid",
            [*self._java("1g"), log4j, "-cp", classpath, "kafka.Kafka", str(props)],
            kafka_log,
        )
        self._save_state(kafka_pid=pid)
        print(f"Kafka {KAFKA_VERSION} starting on 127.0.0.1:{self.ports.kafka} (log: {kafka_log})")  # type: ignore[union-attr]

    def _wait_kafka(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient  # heavy import, only when needed

        assert self.ports is not None
        while not _port_open(self.ports.kafka):  # before librdkafka, which logs every refusal
            self._check_alive("kafka_pid", self.endpoints.kafka_log)
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not open its port; see {self.endpoints.kafka_log}")
            time.sleep(0.3)
        admin = AdminClient({"bootstrap.servers": self.endpoints.bootstrap_servers, "log_level": 2})
        while True:
            self._check_alive("kafka_pid", self.endpoints.kafka_log)
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception:  # noqa: BLE001 - not up yet; retried until the deadline
                pass
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not answer in time; see {self.endpoints.kafka_log}")
            time.sleep(0.5)

    # --- registry -------------------------------------------------------------------------
    def _start_registry(self) -> None:
        assert self.ports is not None
        reg_log = self.dir / "registry.log"
        cmd = [
            *self._java("768m", REGISTRY_JAVA),
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.ports.registry}",
            # schemas live in the broker (kafkasql journal), so they survive restarts
            # together with the records that carry their ids
            "-Dapicurio.storage.kind=kafkasql",
            f"-Dapicurio.kafkasql.bootstrap.servers=127.0.0.1:{self.ports.kafka}",
            "-Dquarkus.log.level=INFO",
            # the management interface is fixed on at build time; keep it off :9000 and loopback
            "-Dquarkus.management.host=127.0.0.1",
            f"-Dquarkus.management.port={free_port()}",
            "-XX:TieredStopAtLevel=1",  # faster start-up; the registry is not hot code
            f"-Dpulse.instance={self.dir}",  # marks the process as ours for status/down
            "-jar",
            str(self.registry_home / "quarkus-run.jar"),
        ]
        pid = self._spawn("registry_pid", cmd, reg_log, cwd=self.registry_home)
        self._save_state(registry_pid=pid)
        where = f"127.0.0.1:{self.ports.registry}"
        print(f"Apicurio Registry {APICURIO_VERSION} starting on {where} (log: {reg_log})")

    def _wait_registry(self, deadline: float) -> None:
        url = self.endpoints.schema_registry_url + "/subjects"
        while True:
            self._check_alive("registry_pid", self.endpoints.registry_log)
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise StackError(
                    f"registry did not answer in time; see {self.endpoints.registry_log}"
                )
            time.sleep(0.5)

    # --- helpers --------------------------------------------------------------------------
    def _spawn(self, key: str, cmd: list[str], log_file: Path, cwd: Path | None = None) -> int:
        out = log_file.open("ab")
        # own session: survives the CLI that started it, and can be stopped as a group
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or self.dir, start_new_session=True
        )
        out.close()
        self._children[key] = proc
        return proc.pid

    def _check_alive(self, key: str, log_file: str) -> None:
        child = self._children.get(key)
        pid = child.pid if child else self._load_state().get(key)
        # our own child: ask the kernel, not /proc (which can lag a fresh exec)
        alive = child.poll() is None if child else _alive(pid, str(self.dir))
        if not alive:
            _reap(pid)
            tail = _tail(Path(log_file))
            raise StackError(f"{key.split('_')[0]} exited during start-up; see {log_file}\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _reap(pid: int | None) -> None:
    """Collect a child that exited, so it does not linger as a zombie (looks alive)."""
    if not pid:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
