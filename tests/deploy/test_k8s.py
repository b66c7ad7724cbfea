"""k8s/, checked offline: render the overlays, validate every object against the Kubernetes
schemas (kubernetes-validate), and check probes, ports, env names and security settings."""

from __future__ import annotations

import copy
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from schemas import topics
from settings import PREFIX, Settings
from tests.deploy.kustomize import KustomizeError, build

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ["dev", "prod"]
K8S_VERSION = "1.31.0"  # the oldest Kubernetes we claim to run on
FIELDS = {PREFIX + f.name.upper() for f in fields(Settings)}
WORKLOADS = {"Deployment", "StatefulSet"}
Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return build(K8S / "overlays" / request.param)


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def config(objs: list[Obj]) -> dict[str, str]:
    [cm] = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == "pulse-config"]
    return cm["data"]


def effective(objs: list[Obj], name: str) -> str:
    """A setting's value in the pods: the ConfigMap's, else the code's default."""
    return config(objs).get(PREFIX + name.upper(), str(getattr(Settings(), name)))


def containers(objs: list[Obj]) -> list[tuple[Obj, Obj]]:
    workloads = [w for w in objs if w["kind"] in WORKLOADS]
    return [(w, c) for w in workloads for c in w["spec"]["template"]["spec"]["containers"]]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    theirs = [d for d in yaml.safe_load_all(out) if d]
    key = lambda o: (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])  # noqa: E731
    mine = build(K8S / "overlays" / overlay)
    assert {key(o): o for o in mine} == {key(o): o for o in theirs}


def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizeError, match="commonLabels"):
        build(tmp_path)


def test_every_object_is_valid_kubernetes(rendered: list[Obj]) -> None:
    optional = [
        d for p in (K8S / "optional").glob("*.yaml") for d in yaml.safe_load_all(p.read_text())
    ]
    checked = 0
    for obj in rendered + optional:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked by test_keda_scales_workers_within_the_partitions
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 12


def test_validation_catches_a_misspelt_field(rendered: list[Obj]) -> None:
    worker = copy.deepcopy(by_kind(rendered, "StatefulSet")[0])
    worker["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


def test_probes_point_at_the_ports_and_paths_the_app_serves(rendered: list[Obj]) -> None:
    web_port, metrics_port = (
        int(effective(rendered, "web_port")),
        int(effective(rendered, "metrics_port")),
    )
    for workload, c in containers(rendered):
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if c["args"][0] == "worker":
            expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz",
                        "startupProbe": "/healthz"}  # fmt: skip
            assert ports == {"web": web_port}
        else:  # producers and alerts: producers.metrics / consumers.alerts health servers
            expected = {"readinessProbe": "/healthz", "livenessProbe": "/healthz"}
            assert ports == {"metrics": metrics_port}, workload["metadata"]["name"]
        for probe, path in expected.items():
            get = c[probe]["httpGet"]
            assert get["path"] == path and get["port"] in ports, (
                workload["metadata"]["name"],
                probe,
            )


@pytest.mark.parametrize(
    "source, paths",
    [
        ("producers/metrics.py", ["/healthz", "/metrics"]),
        ("consumers/alerts.py", ["/healthz", "/metrics"]),
        ("processors", ["/healthz", "/readyz", "/metrics"]),
    ],
)
def test_the_probed_paths_exist_in_the_code(source: str, paths: list[str]) -> None:
    path = ROOT / source
    if source == "processors" and not (path / "app.py").exists():
        pytest.skip("processors/app.py (the Faust app and its web views) has not landed yet")
    text = "".join(
        p.read_text() for p in ([path] if path.is_file() else sorted(path.rglob("*.py")))
    )
    for p in paths:
        assert f'"{p}"' in text, f"{source} serves no {p}"


def test_env_names_are_settings_fields(rendered: list[Obj]) -> None:
    names = set(config(rendered))
    for secret in by_kind(rendered, "Secret"):
        names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for _, c in containers(rendered):
        names |= {e["name"] for e in c.get("env", [])}
    assert names and names <= FIELDS, sorted(names - FIELDS)
    for _, c in containers(rendered):
        refs = {r.get("configMapRef", r.get("secretRef", {})).get("name") for r in c["envFrom"]}
        assert refs == {"pulse-config", "pulse-secrets"}


def test_the_secret_is_a_template_without_values(rendered: list[Obj]) -> None:
    [secret] = by_kind(rendered, "Secret")
    assert secret["stringData"] and all(v == "" for v in secret["stringData"].values())
    assert "data" not in secret


def test_every_pod_runs_restricted(rendered: list[Obj]) -> None:
    for w in (o for o in rendered if o["kind"] in WORKLOADS):
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts  # read-only root: somewhere to write


def test_producers_run_one_connection_each(rendered: list[Obj]) -> None:
    producers = [
        d for d in by_kind(rendered, "Deployment") if d["metadata"]["name"].startswith("producer-")
    ]
    assert producers
    for d in producers:
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
        assert d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "produce"


def test_workers_are_a_spread_statefulset_with_a_disruption_budget(rendered: list[Obj]) -> None:
    [sts] = by_kind(rendered, "StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]
    assert sts["spec"]["replicas"] <= int(effective(rendered, "symbol_partitions"))
    spread = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    [pdb] = by_kind(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = {s["metadata"]["name"]: s for s in by_kind(rendered, "Service")}
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    mounts = {
        m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    state_dir = effective(rendered, "state_dir")
    assert any(state_dir.startswith(m + "/") for m in mounts), f"{state_dir} is on no volume"
    rocksdb = effective(rendered, "store") == "rocksdb"
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    assert ("data" in claims) == rocksdb and ("data" in volumes) != rocksdb  # PVC with RocksDB


def test_services_select_pods_and_ports_that_exist(rendered: list[Obj]) -> None:
    for svc in by_kind(rendered, "Service"):
        selector = svc["spec"]["selector"].items()
        pods = [w for w in rendered if w["kind"] in WORKLOADS
                and selector <= w["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
        assert pods, svc["metadata"]["name"]
        for port in svc["spec"]["ports"]:
            for w in pods:
                names = {
                    p["name"]
                    for c in w["spec"]["template"]["spec"]["containers"]
                    for p in c["ports"]
                }
                assert port["targetPort"] in names, (svc["metadata"]["name"], w["metadata"]["name"])


def test_network_policy_admits_only_the_app_ports(rendered: list[Obj]) -> None:
    [policy] = by_kind(rendered, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {} and set(policy["spec"]["policyTypes"]) == {
        "Ingress",
        "Egress",
    }
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {
        int(effective(rendered, "web_port")),
        int(effective(rendered, "metrics_port")),
    }


def test_keda_scales_workers_within_the_partitions(rendered: list[Obj]) -> None:
    scaled = by_kind(rendered, "ScaledObject")
    if not scaled:
        pytest.skip("this overlay does not autoscale")
    [so] = scaled
    target = so["spec"]["scaleTargetRef"]
    assert any(
        o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"] for o in rendered
    )
    partitions = int(effective(rendered, "symbol_partitions"))
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
    [trigger] = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == effective(rendered, "app_id")
    assert meta["topic"] == effective(rendered, "topic_prefix") + topics.MENTIONS.name
    assert meta["bootstrapServers"] == effective(rendered, "bootstrap_servers")
    assert int(meta["lagThreshold"]) > 0
    auth = {o["metadata"]["name"]: o for o in by_kind(rendered, "TriggerAuthentication")}
    [secret] = by_kind(rendered, "Secret")
    for ref in auth[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_the_hpa_alternative_respects_the_partitions_too() -> None:
    [hpa] = yaml.safe_load_all((K8S / "optional" / "worker-hpa.yaml").read_text())
    prod = build(K8S / "overlays" / "prod")
    assert hpa["spec"]["maxReplicas"] <= int(effective(prod, "symbol_partitions"))
    assert (
        hpa["spec"]["scaleTargetRef"]["name"] == by_kind(prod, "StatefulSet")[0]["metadata"]["name"]
    )
