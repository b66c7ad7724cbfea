"""k8s/ as a cluster would receive it: rendered by the real ``kubectl kustomize`` (kubectl
bundles kustomize), so the tests check what ``kubectl apply -k`` would send, not a model of it."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"


@functools.cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize <directory>`` prints, parsed (empty documents dropped).

    Cached: the objects are shared between callers, so copy one before changing it.
    """
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render k8s/ (it bundles kustomize): install kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return tuple(d for d in yaml.safe_load_all(out) if d)


def kustomize(overlay: str) -> tuple[dict[str, Any], ...]:
    """One overlay of ``k8s/overlays/`` (``dev``, ``prod/topics`` …), rendered."""
    return render(K8S / "overlays" / overlay)
