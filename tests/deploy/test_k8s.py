"""k8s/, checked offline: every overlay rendered by the real `kubectl kustomize`, every object
validated against the Kubernetes schemas (kubernetes-validate), and the properties a first
deployment depends on: no Secret values anywhere, one image per environment (the topics Job
included), no `replicas` where an autoscaler owns the count, nothing deployed that lacks its
required configuration, each workload only its own secret keys, probes on the ports and paths
the code serves."""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pulse.cli.produce import REQUIRED
from pulse.schemas import topics
from pulse.settings import PREFIX, Settings
from tests.support.kustomize import K8S, kustomize

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "prod"]
RENDERS = OVERLAYS + [f"{o}/topics" for o in OVERLAYS]
K8S_VERSION = "1.31.0"  # the oldest Kubernetes we claim to run on
FIELDS = {PREFIX + f.name.upper() for f in fields(Settings)}
SECRET_FIELDS = {PREFIX + f.name.upper() for f in fields(Settings) if f.metadata["secret"]}
# what every workload may read from the Secret to reach a secured Kafka and registry
KAFKA_KEYS = {"PULSE_SASL_USERNAME", "PULSE_SASL_PASSWORD", "PULSE_SCHEMA_REGISTRY_AUTH"}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
AUTOSCALERS = {"ScaledObject", "HorizontalPodAutoscaler"}
Obj = dict[str, Any]


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return copy.deepcopy(list(kustomize(request.param)))


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    [obj] = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    return obj


def config(objs: list[Obj]) -> dict[str, str]:
    return named(objs, "ConfigMap", "pulse-config")["data"]


def effective(objs: list[Obj], name: str) -> str:
    """A setting's value in the pods: the ConfigMap's, else the code's default."""
    return config(objs).get(PREFIX + name.upper(), str(getattr(Settings(), name)))


def pod(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def containers(objs: list[Obj]) -> list[tuple[Obj, Obj]]:
    return [
        (w, c)
        for w in objs
        if w["kind"] in WORKLOADS
        for c in pod(w).get("initContainers", []) + pod(w)["containers"]
    ]


def secret_refs(container: Obj) -> dict[str, Obj]:
    """env name → its secretKeyRef."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def required_settings(container: Obj) -> set[str]:
    """The PULSE_* variables the command cannot start without (from the code's own table)."""
    args = container["args"]
    if args[0] == "produce":
        needed = {PREFIX + n.upper() for n in REQUIRED.get(args[1], ())}
        if args[1] == "chart" and "--symbols" not in args:
            needed.add("PULSE_CHART_SYMBOLS")  # run_chart refuses to start without symbols
        return needed
    if args[0] == "alerts":
        return {"PULSE_ALERT_WEBHOOK_URLS"}  # pulse/consumers/alerts.py: exit 2 without one
    return set()


# --- the render itself --------------------------------------------------------------------


@pytest.mark.parametrize("path", RENDERS)
def test_every_object_is_valid_kubernetes(path: str) -> None:
    optional = [
        d for p in (K8S / "optional").glob("*.yaml") for d in yaml.safe_load_all(p.read_text())
    ]
    checked = 0
    for obj in list(kustomize(path)) + optional:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked by test_keda_scales_each_stage_within_its_partitions
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= (1 if path.endswith("topics") else 10)


def test_validation_catches_a_misspelt_field(rendered: list[Obj]) -> None:
    worker = copy.deepcopy(by_kind(rendered, "StatefulSet")[0])
    pod(worker)["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


# --- deployment defect 2: no Secret values, each workload its own keys -------------------


@pytest.mark.parametrize("path", RENDERS)
def test_no_render_holds_a_secret_or_a_secret_value(path: str) -> None:
    objs = list(kustomize(path))
    # a rendered Secret, even with empty values, would be merged over the real one on apply
    assert by_kind(objs, "Secret") == []
    for cm in by_kind(objs, "ConfigMap"):
        assert not set(cm["data"]) & SECRET_FIELDS, cm["metadata"]["name"]
    for workload, c in containers(objs):
        for e in c.get("env", []):
            if e["name"] in SECRET_FIELDS | KAFKA_KEYS:
                assert "value" not in e, (workload["metadata"]["name"], e["name"])
        assert not any("secretRef" in r for r in c.get("envFrom", [])), "envFrom a whole Secret"


def test_each_workload_reads_only_its_own_secret_keys(rendered: list[Obj]) -> None:
    for workload, c in containers(rendered):
        refs = secret_refs(c)
        assert all(r["name"] == "pulse-secrets" and r["key"] == n for n, r in refs.items())
        own = {n for n in required_settings(c) if n in SECRET_FIELDS or "FIREHOSE" in n}
        assert set(refs) - KAFKA_KEYS == own, workload["metadata"]["name"]
        for key in KAFKA_KEYS:  # PLAINTEXT clusters (dev) have none of these: optional
            assert refs[key].get("optional") is True, (workload["metadata"]["name"], key)


# --- deployment defect 3: one image per environment -------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_image_in_every_object_including_the_topics_job(overlay: str) -> None:
    images = {
        (w["kind"], w["metadata"]["name"]): c["image"]
        for path in (overlay, f"{overlay}/topics")
        for w, c in containers(list(kustomize(path)))
    }
    assert ("Job", "topics") in images and len(images) >= 3
    assert len(set(images.values())) == 1, images
    [image] = set(images.values())
    name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
    assert name.endswith("stocktwits-pulse") and tag and tag != "latest", image


def test_docs_and_compose_build_the_dev_image() -> None:
    [image] = {c["image"] for _, c in containers(list(kustomize("dev")))}
    assert f"docker build -t {image} ." in (ROOT / "docs" / "deploy.md").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["x-pulse-app"]["image"] == image.replace(":dev", ":${IMAGE_TAG:-dev}")


# --- deployment defect 4: nothing deployed that lacks its configuration -----------------


def test_nothing_deployed_lacks_its_required_configuration(rendered: list[Obj]) -> None:
    """A required setting comes from the ConfigMap (non-empty) or a non-optional key of the
    Secret: without that key the pod waits, naming it, instead of starting and exiting 2."""
    cm = config(rendered)
    for workload, c in containers(rendered):
        refs = secret_refs(c)
        for var in required_settings(c):
            from_config = bool(cm.get(var))
            from_secret = var in refs and refs[var].get("optional") is not True
            assert from_config or from_secret, (workload["metadata"]["name"], var)


def test_dev_needs_no_credential_at_all() -> None:
    dev = list(kustomize("dev"))
    for workload, c in containers(dev):
        assert not required_settings(c), workload["metadata"]["name"]
        assert all(r.get("optional") is True for r in secret_refs(c).values())


# --- deployment defect 5: autoscalers own the replica count ------------------------------


def autoscaled_targets(objs: list[Obj]) -> list[Obj]:
    targets = []
    for scaler in (o for o in objs if o["kind"] in AUTOSCALERS):
        ref = scaler["spec"]["scaleTargetRef"]
        targets.append(named(objs, ref["kind"], ref["name"]))
    return targets


def test_no_replicas_on_autoscaled_workloads(rendered: list[Obj]) -> None:
    hpa = [d for d in yaml.safe_load_all((K8S / "optional" / "worker-hpa.yaml").read_text())]
    for target in autoscaled_targets(rendered + hpa):
        assert "replicas" not in target["spec"], target["metadata"]["name"]
    # the stages are autoscaled in prod, so the shared base must not set a count either
    for kind, name in (("StatefulSet", "worker"), ("Deployment", "fan-out")):
        assert "replicas" not in named(rendered, kind, name)["spec"]


def test_prod_autoscales_both_processing_stages() -> None:
    names = {t["metadata"]["name"] for t in autoscaled_targets(list(kustomize("prod")))}
    assert names == {"worker", "fan-out"}


# --- probes, ports, settings ---------------------------------------------------------------


def test_probes_point_at_the_ports_and_paths_the_app_serves(rendered: list[Obj]) -> None:
    ports = {
        "signals": ("web", int(effective(rendered, "web_port"))),
        "fan-out": ("fan-out", int(effective(rendered, "fan_out_port"))),
        "other": ("metrics", int(effective(rendered, "metrics_port"))),
    }
    for workload, c in containers(rendered):
        if workload["kind"] == "Job":
            continue
        args = c["args"]
        stage = args[2] if args[:2] == ["worker", "--stage"] else "other"
        assert args[0] != "worker" or stage in ("signals", "fan-out"), args  # never both at once
        name, port = ports[stage]
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {name: port}
        expected = {"readinessProbe": "/healthz", "livenessProbe": "/healthz"}
        if stage == "signals":
            expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz",
                        "startupProbe": "/healthz"}  # fmt: skip
        for probe, path in expected.items():
            assert c[probe]["httpGet"] == {"path": path, "port": name}, (
                workload["metadata"]["name"], probe,
            )  # fmt: skip
    # probes come from the kubelet, outside the container: the servers must not bind loopback
    assert effective(rendered, "bind_host") == "0.0.0.0"


def test_the_probed_paths_exist_in_the_code() -> None:
    text = (ROOT / "pulse/health.py").read_text()  # the one server of every process
    for p in ["/healthz", "/readyz", "/metrics"]:
        assert f'"{p}"' in text, f"pulse/health.py serves no {p}"


@pytest.mark.parametrize(
    "source",
    ["producers/metrics.py", "pulse/consumers/alerts.py", "processors/fanout.py",
     "processors/app.py"],
)  # fmt: skip
def test_every_probed_process_serves_through_pulse_health(source: str) -> None:
    assert "health.start(" in (ROOT / source).read_text(), f"{source} starts no pulse.health"


def test_env_names_are_settings_fields(rendered: list[Obj]) -> None:
    names = set(config(rendered))
    for _, c in containers(rendered):
        names |= {e["name"] for e in c.get("env", [])}
        refs = {r.get("configMapRef", {}).get("name") for r in c["envFrom"]}
        assert refs == {"pulse-config"}
    assert names and names <= FIELDS, sorted(names - FIELDS)


def test_prod_talks_tls_to_kafka_and_the_registry() -> None:
    prod = list(kustomize("prod"))
    assert effective(prod, "security_protocol") == "SASL_SSL"
    assert effective(prod, "schema_registry_url").startswith("https://")


def test_every_pod_runs_restricted(rendered: list[Obj]) -> None:
    for w in (o for o in rendered if o["kind"] in WORKLOADS):
        spec = pod(w)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}  # read-only root


def test_producers_run_one_connection_each(rendered: list[Obj]) -> None:
    producers = [
        d for d in by_kind(rendered, "Deployment") if d["metadata"]["name"].startswith("producer-")
    ]
    assert producers
    for d in producers:
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
        assert pod(d)["containers"][0]["args"][0] == "produce"


def test_signals_workers_are_a_spread_statefulset_with_a_disruption_budget(
    rendered: list[Obj],
) -> None:
    sts = named(rendered, "StatefulSet", "worker")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pod(sts)["containers"][0]["args"] == ["worker", "--stage", "signals"]
    spread = pod(sts)["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    [pdb] = by_kind(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = {s["metadata"]["name"]: s for s in by_kind(rendered, "Service")}
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    mounts = {m["mountPath"] for m in pod(sts)["containers"][0]["volumeMounts"]}
    state_dir = effective(rendered, "state_dir")
    assert any(state_dir.startswith(m + "/") for m in mounts), f"{state_dir} is on no volume"
    rocksdb = effective(rendered, "store") == "rocksdb"
    volumes = {v["name"] for v in pod(sts).get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    assert ("data" in claims) == rocksdb and ("data" in volumes) != rocksdb  # PVC with RocksDB


def test_the_fan_out_is_a_stateless_deployment(rendered: list[Obj]) -> None:
    fan = named(rendered, "Deployment", "fan-out")
    assert pod(fan)["containers"][0]["args"] == ["worker", "--stage", "fan-out"]
    assert "volumeClaimTemplates" not in fan["spec"]


def test_services_select_pods_and_ports_that_exist(rendered: list[Obj]) -> None:
    for svc in by_kind(rendered, "Service"):
        selector = svc["spec"]["selector"].items()
        pods = [w for w in rendered if w["kind"] in WORKLOADS
                and selector <= w["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
        assert pods, svc["metadata"]["name"]
        for port in svc["spec"]["ports"]:
            for w in pods:
                names = {p["name"] for c in pod(w)["containers"] for p in c["ports"]}
                assert port["targetPort"] in names, (svc["metadata"]["name"], w["metadata"]["name"])


def test_network_policy_admits_only_the_app_ports(rendered: list[Obj]) -> None:
    [policy] = by_kind(rendered, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {
        int(effective(rendered, "web_port")),
        int(effective(rendered, "fan_out_port")),
        int(effective(rendered, "metrics_port")),
    }


def test_keda_scales_each_stage_within_its_partitions() -> None:
    prod = list(kustomize("prod"))
    app_id, prefix = effective(prod, "app_id"), effective(prod, "topic_prefix")
    expected = {  # target → (consumer group, topic, partitions its group reads)
        "worker": (app_id, topics.MENTION_BATCHES.name, "symbol_partitions"),
        "fan-out": (f"{app_id}-fan-out", topics.MESSAGES.name, "raw_partitions"),
    }
    auth = {o["metadata"]["name"]: o for o in by_kind(prod, "TriggerAuthentication")}
    for so in by_kind(prod, "ScaledObject"):
        group, topic, partitions = expected[so["spec"]["scaleTargetRef"]["name"]]
        limit = int(effective(prod, partitions))
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= limit
        [trigger] = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka" and int(meta["lagThreshold"]) > 0
        assert (meta["consumerGroup"], meta["topic"]) == (group, prefix + topic)
        assert meta["bootstrapServers"] == effective(prod, "bootstrap_servers")
        for ref in auth[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]:
            assert ref["name"] == "pulse-secrets" and ref["key"] in KAFKA_KEYS


def test_the_hpa_alternative_respects_the_partitions_too() -> None:
    [hpa] = yaml.safe_load_all((K8S / "optional" / "worker-hpa.yaml").read_text())
    prod = list(kustomize("prod"))
    assert hpa["spec"]["maxReplicas"] <= int(effective(prod, "symbol_partitions"))
    [sts] = by_kind(prod, "StatefulSet")
    assert hpa["spec"]["scaleTargetRef"]["name"] == sts["metadata"]["name"]
    selector = hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]
    assert selector["topic"] == topics.MENTION_BATCHES.name
