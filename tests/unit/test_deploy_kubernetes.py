"""deploy/kubernetes against the Kubernetes API's own schemas (kubernetes-validate ships them,
so this needs no cluster and no network): every field name, type and required field of each
object, strictly (an unknown field is an error, as `kubectl apply --validate=strict` says).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release the manifests are written for, and the newest known.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def manifest_files(folder: Path) -> list[Path]:
    """The kustomization's resources, and the Secret's example that documents their shape."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [folder / name for name in kustomization["resources"]] + [
        folder / "secret.example.yaml"]


def objects(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in manifest_files(folder):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((f"{path.name}: {doc['kind']}/{doc['metadata']['name']}", doc))
    return found


def problems(folder: Path, version: str) -> list[str]:
    seen = []
    for where, doc in objects(folder):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            seen.append(f"{where}: {path}: {exc.message}")
    return seen


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_every_object_is_validated() -> None:
    kinds = {doc["kind"] for _, doc in objects(KUBE)}
    assert {"Deployment", "Service", "ConfigMap", "Job", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Secret"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_match_the_api_schemas(version: str, offline: None) -> None:
    assert problems(KUBE, version) == []


@pytest.mark.parametrize("breakage", ["misspelt field", "wrong type", "missing field"])
def test_a_broken_manifest_is_caught(tmp_path: Path, breakage: str, offline: None) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBE, copy)
    path = copy / "gateway-deployment.yaml"
    text = path.read_text()
    broken = {
        "misspelt field": text.replace("  replicas: 3", "  replica: 3", 1),
        "wrong type": text.replace("containerPort: 8080", "containerPort: eighty", 1),
        "missing field": text.replace("        - name: gateway\n          image:",
                                      "        - image:", 1),  # a container's name is required
    }[breakage]
    assert broken != text, "the breakage no longer applies to the manifest"
    path.write_text(broken)
    found = problems(copy, VERSIONS[-1])
    assert found and all("gateway-deployment.yaml: Deployment/keygate-gateway" in p
                         for p in found), found
