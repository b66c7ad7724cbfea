"""Render a Kustomize tree offline: the subset of Kustomize that k8s/ uses.

``resources`` (files and directories), ``patches`` (strategic-merge patch files, including
``$patch: delete`` of an object or of a list element), ``namespace`` and ``images``. Anything
else in a kustomization.yaml is an error, so the subset cannot silently drift from the files.
tests/deploy/test_k8s.py checks this renderer against ``kubectl kustomize`` where it exists.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "patches", "namespace", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}  # fmt: skip
# strategic-merge keys of the lists k8s/ patches; other lists are replaced
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath"}  # fmt: skip


class KustomizeError(ValueError):
    """The tree uses something outside the supported subset, or a patch matches nothing."""


def load_yaml_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def build(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize DIRECTORY`` would print (order aside)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    objs: list[Obj] = []
    for entry in k.get("resources", []):
        path = directory / entry
        objs += build(path) if path.is_dir() else load_yaml_docs(path)
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path: FILE` is supported")
        for doc in load_yaml_docs(directory / patch["path"]):
            objs = apply_patch(objs, doc)
    if "namespace" in k:
        objs = [set_namespace(o, k["namespace"]) for o in objs]
    for image in k.get("images", []):
        objs = [set_image(o, image) for o in objs]
    return objs


def _same_target(obj: Obj, patch: Obj) -> bool:
    group = lambda o: o["apiVersion"].rsplit("/", 1)[0] if "/" in o["apiVersion"] else ""  # noqa: E731
    return (
        obj["kind"] == patch["kind"]
        and group(obj) == group(patch)
        and obj["metadata"]["name"] == patch["metadata"]["name"]
    )


def apply_patch(objs: list[Obj], patch: Obj) -> list[Obj]:
    hits = [o for o in objs if _same_target(o, patch)]
    if len(hits) != 1:
        raise KustomizeError(
            f"patch {patch['kind']}/{patch['metadata']['name']}: {len(hits)} targets"
        )
    if patch.get("$patch") == "delete":
        return [o for o in objs if o is not hits[0]]
    merged = merge(copy.deepcopy(hits[0]), patch)
    return [merged if o is hits[0] else o for o in objs]


def merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge of ``patch`` into ``base``: maps recursively, keyed lists by key."""
    if isinstance(patch, dict) and isinstance(base, dict):
        for k, v in patch.items():
            if k == "$patch":
                continue
            if v is None:
                base.pop(k, None)
            elif k in base:
                base[k] = merge(base[k], v, k)
            else:
                base[k] = _clean(v)
        return base
    if isinstance(patch, list) and isinstance(base, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = list(base)
        for item in patch:
            idx = next((i for i, b in enumerate(out) if b.get(mk) == item.get(mk)), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    out.pop(idx)
            elif idx is None:
                out.append(_clean(item))
            else:
                out[idx] = merge(out[idx], item, None)
        return out
    return _clean(patch)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_clean(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return copy.deepcopy(value)


def set_namespace(obj: Obj, namespace: str) -> Obj:
    obj = copy.deepcopy(obj)
    if obj["kind"] == "Namespace":
        obj["metadata"]["name"] = namespace  # as kustomize does: the namespace follows
    elif obj["kind"] not in CLUSTER_SCOPED:
        obj["metadata"]["namespace"] = namespace
    return obj


def set_image(obj: Obj, image: dict[str, str]) -> Obj:
    obj = copy.deepcopy(obj)
    for pod in _pod_specs(obj):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = c["image"].partition(":")
            if name != image["name"]:
                continue
            c["image"] = image.get("newName", name) + (
                f":{image['newTag']}" if "newTag" in image else (f":{tag}" if tag else "")
            )
    return obj


def _pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return [spec]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    template = spec.get("template", {}) if isinstance(spec, dict) else {}
    return [template["spec"]] if "spec" in template else []
