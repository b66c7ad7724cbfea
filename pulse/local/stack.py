"""Provision, start and stop a local Apache Kafka (KRaft) broker and Apicurio Registry.

Both come from Maven Central into ``<local_downloads>`` (``<local_home>``, that is
``~/.cache/stocktwits-pulse``, by default; a separate download cache lets many homes, e.g. CI
runs, share one download): the broker's jars through ``pulse/local/pom.xml``, the registry as
the ready-to-run Quarkus archive. Each *instance* (``default`` for ``pulse local up``, a
throwaway one per test run) has its own ports, data and logs under
``<local_home>/instances/<name>/`` and runs detached; PIDs are kept in ``state.json``.

A broker may be started secured (``LocalStack(..., security=SaslSsl(ca, user, password))``,
broker only): one SASL_SSL listener with SCRAM-SHA-512 for clients and for the broker itself,
its certificate issued from the caller's CA (:mod:`embedded.tls`), the SCRAM users created
when the instance is formatted. Tests use it to run the pipeline as a secured cluster sees it.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pulse.local import tls
from pulse.settings import Settings

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


SCRAM_MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "pulse-broker"  # the broker's own SCRAM user, for inter-broker requests
# what `kafka-storage format --add-scram 'SCRAM-SHA-512=[name=…,password=…]'` parses as is
# and a JAAS line holds without quoting
_SCRAM_TEXT = re.compile(r"[A-Za-z0-9._~+/-]{1,128}")


@dataclass(frozen=True)
class SaslSsl:
    """A secured broker: its one client listener speaks SASL_SSL with SCRAM-SHA-512.

    The broker's certificate is issued from ``ca`` (the caller's CA, e.g. made with
    :func:`embedded.tls.make_ca`) for 127.0.0.1/localhost; clients verify it with
    ``ca.cert``. ``username``/``password`` is the clients' SCRAM user, created when the
    instance is formatted, together with the broker's own inter-broker user. The KRaft
    controller listener stays PLAINTEXT on loopback (it serves no client requests here).
    """

    ca: tls.CertificateAuthority
    username: str
    password: str

    def __post_init__(self) -> None:
        for what, value in (("user name", self.username), ("password", self.password)):
            if not _SCRAM_TEXT.fullmatch(value):
                raise StackError(
                    f"SCRAM {what} for the embedded broker: use 1-128 of A-Z a-z 0-9 . _ ~ + / -"
                )

    def client_config(self) -> dict[str, str]:
        """librdkafka keys for a client of this broker (what ``Settings.kafka_config()`` maps)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": str(self.ca.cert),
        }

    def settings(self, base: Settings, password: str | None = None) -> Settings:
        """``base`` with this broker's security settings (``password`` to try another)."""
        return base.replace(
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=self.username,
            sasl_password=self.password if password is None else password,
            ssl_ca_location=str(self.ca.cert),
        )


def scram_argument(username: str, password: str) -> str:
    """One ``--add-scram`` value: a SCRAM-SHA-512 credential created at format time."""
    return f"{SCRAM_MECHANISM}=[name={username},password={password}]"


def listener_properties(
    ports: Ports, secured: tuple[Path, Path, str] | None = None
) -> dict[str, str]:
    """The broker's listeners: PLAINTEXT, or with ``secured`` = (PEM keystore, PEM CA,
    inter-broker password) one SASL_SSL listener for clients and the broker itself.

    The controller listener is PLAINTEXT on loopback either way: in a combined node it
    carries only the broker's own KRaft traffic.
    """
    controller = f"CONTROLLER://127.0.0.1:{ports.controller}"
    common = {
        "controller.quorum.voters": f"1@127.0.0.1:{ports.controller}",
        "controller.listener.names": "CONTROLLER",
    }
    if secured is None:
        return {
            **common,
            "listeners": f"PLAINTEXT://127.0.0.1:{ports.kafka},{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports.kafka}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        }
    keystore, ca_cert, broker_password = secured
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{broker_password}";')  # fmt: skip
    return {
        **common,
        "listeners": f"SASL_SSL://127.0.0.1:{ports.kafka},{controller}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{ports.kafka}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
        # PEM stores (KIP-651): the files tls.issue writes, no keytool or store passwords
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_cert),
        "ssl.client.auth": "none",
        "ssl.endpoint.identification.algorithm": "https",  # the broker checks itself too
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports() -> Ports:
    return Ports(free_port(), free_port(), free_port())


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Like Kafka's own ``Uuid.randomUuid()``, never one starting with ``-``: command-line
    parsers read such an id as an option (1 id in 64 would be refused).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def valid_cluster_id(cid: object) -> bool:
    """Whether ``cid`` is a cluster id Kafka accepts: 16 bytes in 22 URL-safe base64 chars."""
    if not isinstance(cid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{22}", cid):
        return False
    return len(base64.urlsafe_b64decode(cid + "==")) == 16


def format_command(
    java: list[str], classpath: str, cluster_id: str, props: Path, scram: Sequence[str] = ()
) -> list[str]:
    """``kafka-storage format``; ``--cluster-id=ID`` in one argument, so an id starting with
    ``-`` (a valid id all the same) is never taken for an option.

    :param scram: ``--add-scram`` values (:func:`scram_argument`): SCRAM users written into
        the first metadata, so SASL works from the broker's first start.
    """
    users = [arg for value in scram for arg in ("--add-scram", value)]
    return [*java, "-cp", classpath, "kafka.tools.StorageTool", "format",
            f"--cluster-id={cluster_id}", "--config", str(props), *users,
            "--ignore-formatted"]  # fmt: skip


def port_in_use(port: int) -> bool:
    """Whether something already listens on (or holds) 127.0.0.1:``port``.

    SO_REUSEADDR as the JVM sets it: connections of a broker just stopped, left in
    TIME_WAIT, do not count, a listener does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


JAVA_HINT = "a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
JVM_DIR = Path("/usr/lib/jvm")  # where distributions install their JDKs side by side
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
    candidates += sorted(str(p) for p in JVM_DIR.glob("*/bin/java"))
    found = []
    for java in candidates:
        major = java_major(java)
        if major >= min_major:
            return java
        if major:
            found.append(f"Java {major} at {java}")
    seen = f"found only {', '.join(found)}" if found else "found none"
    if min_major <= 17:
        raise StackError(f"Kafka needs Java {min_major}+, {seen}: install {JAVA_HINT} and retry.")
    raise StackError(
        f"Apicurio Registry {APICURIO_VERSION} needs Java {min_major}+, {seen} "
        "(looked at $JAVA_HOME, PATH, /usr/lib/jvm): install a JDK 21+ "
        "(e.g. apt-get install openjdk-21-jre-headless or Temurin 21) and retry."
    )


def _require(tool: str, package_hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"`{tool}` not found on PATH: install {package_hint} and retry.")
    return path


def _run(cmd: list[str], what: str, log_file: Path, hidden: Sequence[str] = ()) -> None:
    """Run ``cmd`` with its output in ``log_file``; ``hidden`` (arguments holding
    passwords) are logged as ``***``."""
    log.info("%s: %s", what, " ".join("***" if arg in hidden else arg for arg in cmd))
    with log_file.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}): {last_error(log_file)}; see {log_file}"
        )


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

    def __init__(
        self,
        home: Path,
        name: str = "default",
        ports: Ports | None = None,
        downloads: Path | None = None,
        security: SaslSsl | None = None,
    ) -> None:
        """:param security: start the broker secured (SASL_SSL + SCRAM); broker only, the
        registry is not started with it."""
        self.home = home.expanduser()
        self.security = security
        self.name = name
        self.dir = self.home / "instances" / name
        self.downloads = (downloads or home).expanduser()
        self.kafka_home = self.downloads / f"kafka-{KAFKA_VERSION}"
        self.registry_home = self.downloads / f"apicurio-registry-{APICURIO_VERSION}"
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
        return cls(settings.local_home_path, name, ports, settings.local_downloads_path)

    # --- provisioning ---------------------------------------------------------------------
    @property
    def provisioned(self) -> bool:
        return (self.kafka_home / ".complete").exists() and (
            self.registry_home / ".complete"
        ).exists()

    def provision(self) -> None:
        """Fetch the broker jars and the registry archive from Maven Central, once."""
        if self.provisioned:
            return
        self.downloads.mkdir(parents=True, exist_ok=True)
        # one download at a time per cache: two runs sharing it must not fetch into each other
        with (self.downloads / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._provision()

    def _provision(self) -> None:
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
        find_java(17)
        mvn = _require("mvn", "Apache Maven (e.g. apt-get install maven)")
        mvn_log = self.downloads / "maven.log"
        print(f"Fetching {what} from Maven Central (log: {mvn_log}) …")
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _run(
            [mvn, "-q", "-B", "-f", str(EMBEDDED_DIR / "pom.xml"), *goal(tmp),
             f"-Dpulse.build.dir={self.downloads / 'maven-build'}"],
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

    def _load_state(self) -> dict[str, Any]:
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

    def client_config(self) -> dict[str, str]:
        """librdkafka keys to reach this instance's broker (with its security, if any)."""
        cfg = {"bootstrap.servers": self.endpoints.bootstrap_servers}
        return {**cfg, **self.security.client_config()} if self.security else cfg

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
    def up(self, timeout_s: float = 180.0, registry: bool = True) -> Endpoints:
        """Start what is not running (a second call is a no-op) and wait until both answer.

        :param registry: False starts (or restarts) only the broker.
        """
        try:
            return self._up(timeout_s, registry)
        except OSError as exc:  # a file or socket we cannot use: say which, no traceback
            raise StackError(
                f"{exc.strerror or exc}: {exc.filename or ''} — check that {self.home} and "
                f"{self.downloads} are writable, or set PULSE_LOCAL_HOME elsewhere."
            ) from exc

    def _up(self, timeout_s: float, registry: bool) -> Endpoints:
        if registry and self.security is not None:
            raise StackError(
                "a secured embedded broker runs without the registry: call up(registry=False) "
                "and use a registry of your own (the registry would need the broker's "
                "credentials for its kafkasql storage)."
            )
        if self.ports is None:
            self.ports = free_ports()
        running = self.running()
        self._check_ports(running, registry)
        self.provision()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save_state(ports=asdict(self.ports))
        deadline = time.monotonic() + timeout_s
        if not running["kafka"]:
            self._start_kafka()
        self._wait_kafka(deadline)
        if registry and not running["registry"]:
            self._start_registry()
        if registry:
            self._wait_registry(deadline)
        return self.endpoints

    def _check_ports(self, running: dict[str, bool], registry: bool) -> None:
        """Refuse, with what to do, to start on a port another program holds (the JVM would
        only say so deep in its log, after a long start)."""
        assert self.ports is not None
        wanted = []
        if not running["kafka"]:
            wanted += [("Kafka", self.ports.kafka, "PULSE_LOCAL_KAFKA_PORT"),
                       ("the KRaft controller", self.ports.controller,
                        "PULSE_LOCAL_CONTROLLER_PORT")]  # fmt: skip
        if registry and not running["registry"]:
            wanted.append(("the registry", self.ports.registry, "PULSE_LOCAL_REGISTRY_PORT"))
        for what, port, variable in wanted:
            if port_in_use(port):
                raise StackError(
                    f"port {port} for {what} is already in use by another program: stop it, "
                    f"or choose another port with {variable}=… (instance {self.name!r})."
                )

    def down(self, timeout_s: float = 30.0, only: str | None = None) -> None:
        """Stop registry then broker (or ``only`` "kafka" / "registry"): SIGTERM, and SIGKILL
        whatever ignores it."""
        state = self._load_state()
        marker = str(self.dir)
        keys = ("registry_pid", "kafka_pid") if only is None else (f"{only}_pid",)
        for key in keys:
            pid: int | None = state.get(key)
            if pid is None or not _alive(pid, marker):
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
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            **listener_properties(self.ports, self._secured_listener()),
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

    def _secured_listener(self) -> tuple[Path, Path, str] | None:
        """(keystore, CA, inter-broker password) of a secured broker, made on first use: the
        broker's certificate issued from the caller's CA into ``<instance>/tls``."""
        if self.security is None:
            return None
        ca = self.security.ca
        if not ca.cert.exists() or not ca.key.exists():
            raise StackError(f"the CA for the secured broker is missing: {ca.cert}, {ca.key}")
        tls_dir = self.dir / "tls"
        try:
            issued = tls.issue(ca, tls_dir, "broker")  # a CA changed since: a fresh cert
        except tls.TlsError as exc:
            raise StackError(str(exc)) from exc
        state = self._load_state()
        password = state.get("broker_scram_password")
        if password is None:
            formatted = (self.dir / "kafka-data" / "meta.properties").exists()
            if formatted:  # its metadata has no SCRAM users: the broker could not log in
                raise StackError(
                    f"instance {self.name!r} was formatted without SCRAM users: destroy it "
                    f"(`pulse local destroy --instance {self.name}`) to start it secured."
                )
            password = secrets.token_urlsafe(24)
            self._save_state(broker_scram_password=password)
        return issued.keystore, ca.cert, password

    def _scram_users(self) -> list[str]:
        if self.security is None:
            return []
        broker = self._load_state()["broker_scram_password"]
        return [scram_argument(BROKER_USER, broker),
                scram_argument(self.security.username, self.security.password)]  # fmt: skip

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
            self._format(data, props, classpath, log4j, kafka_log)
        pid = self._spawn(
            "kafka_pid",
            [*self._java("1g"), log4j, "-cp", classpath, "kafka.Kafka", str(props)],
            kafka_log,
        )
        self._save_state(kafka_pid=pid)
        print(f"Kafka {KAFKA_VERSION} starting on 127.0.0.1:{self.ports.kafka} (log: {kafka_log})")  # type: ignore[union-attr]

    def _format(self, data: Path, props: Path, classpath: str, log4j: str, kafka_log: Path) -> None:
        """Format the data directory with a fresh cluster id; the id is saved only once the
        format succeeded, so a failed format leaves nothing behind to be reused."""
        # without meta.properties nothing in the directory is usable (an interrupted format
        # or a start that never got that far): start it afresh
        shutil.rmtree(data, ignore_errors=True)
        saved = self._load_state().get("cluster_id")
        if saved is not None:
            log.info("ignoring the saved cluster id %r of a format that did not finish", saved)
        cluster_id = new_cluster_id()
        cmd = format_command([*self._java("256m"), log4j], classpath, cluster_id, props,
                             self._scram_users())  # fmt: skip
        _run(cmd, "kafka storage format", kafka_log, hidden=self._scram_users())
        self._save_state(cluster_id=cluster_id)

    def _wait_kafka(self, deadline: float) -> None:
        from pulse import kafka  # heavy import (librdkafka), only when needed

        assert self.ports is not None
        while not _port_open(self.ports.kafka):  # before librdkafka, which logs every refusal
            self._check_alive("kafka_pid", self.endpoints.kafka_log)
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not open its port; see {self.endpoints.kafka_log}")
            time.sleep(0.3)
        # quiet: what librdkafka would log while the broker finishes starting is noise; the
        # loop below judges, and names the broker's log if it never answers
        admin = kafka.admin(
            kafka.admin_config(self.client_config(), role="local-stack"), quiet=True
        )
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
            raise StackError(
                f"{key.split('_')[0]} exited during start-up: {last_error(Path(log_file))}; "
                f"see {log_file}. If this instance's data is damaged, start afresh with "
                f"`pulse local destroy --instance {self.name}`."
            )


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


def last_error(path: Path) -> str:
    """The last line of a log that looks like the reason of a failure (else its last line)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [line for line in lines if line]
    for line in reversed(lines[-200:]):
        if re.search(r"ERROR|Exception|error:|Error:", line) and not line.startswith("at "):
            return line[:300]
    return lines[-1][:300] if lines else "empty log"
