"""deploy/: every YAML file parses, the routes ConfigMap is config/routes.yaml, and the
manifests hold together (selectors, probes, secret references). Needs no services and no
Docker; haproxy's own check of deploy/haproxy/haproxy.cfg runs in the scale-out test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.route_file import load_route_table

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Kubernetes objects by (kind, name), from the files kustomization.yaml lists."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in documents(KUBE / "kustomization.yaml")[0]["resources"]:
        for doc in documents(KUBE / name):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_deploy_has_yaml_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"docker-compose.yml", "prometheus/prometheus.yml",
            "kubernetes/kustomization.yaml", "kubernetes/routes-configmap.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in docs)


def test_routes_configmap_is_config_routes_yaml(tmp_path: Path) -> None:
    configmap = documents(KUBE / "routes-configmap.yaml")[0]
    expected = (ROOT / "config" / "routes.yaml").read_text()
    assert configmap["data"]["routes.yaml"] == expected, (
        "deploy/kubernetes/routes-configmap.yaml is out of date; regenerate it with: "
        "kubectl create configmap keygate-routes --from-file=routes.yaml=config/routes.yaml "
        "--dry-run=client -o yaml")
    copy = tmp_path / "routes.yaml"
    copy.write_text(configmap["data"]["routes.yaml"])
    assert load_route_table(copy, None).routes


def test_kustomization_lists_existing_files() -> None:
    for name in documents(KUBE / "kustomization.yaml")[0]["resources"]:
        assert (KUBE / name).is_file(), name


def test_gateway_deployment_probes_secrets_and_routes() -> None:
    objects = manifests()
    deployment = objects[("Deployment", "keygate-gateway")]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"][0] == "serve"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "status": 8082}
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
                   if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"GATEWAY_KEY_PEPPER", "GATEWAY_SECRET_KEY"} <= secret_refs.keys()
    assert all(ref["name"] == "keygate-secrets" for ref in secret_refs.values())
    # The route file comes from the ConfigMap, mounted as a folder so updates reach the pod.
    settings = objects[("ConfigMap", "keygate-settings")]["data"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "routes")
    assert "subPath" not in mount
    assert settings["GATEWAY_ROUTES"] == f"{mount['mountPath']}/routes.yaml"
    volume = next(v for v in pod["volumes"] if v["name"] == "routes")
    assert ("ConfigMap", volume["configMap"]["name"]) in objects
    # SIGTERM drains for up to shutdown_timeout (30 s): the grace period must cover it.
    assert pod["terminationGracePeriodSeconds"] > 30


def test_service_hpa_and_pdb_target_the_gateway() -> None:
    objects = manifests()
    labels = objects[("Deployment", "keygate-gateway")]["spec"]["template"]["metadata"]["labels"]
    service = objects[("Service", "keygate-gateway")]
    assert service["spec"]["selector"].items() <= labels.items()
    hpa = objects[("HorizontalPodAutoscaler", "keygate-gateway")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "keygate-gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = objects[("PodDisruptionBudget", "keygate-gateway")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_compose_runs_the_whole_stack() -> None:
    compose = documents(DEPLOY / "docker-compose.yml")[0]
    services = compose["services"]
    assert {"postgres", "redis", "gateway", "admin", "haproxy", "prometheus"} <= services.keys()
    assert services["gateway"]["deploy"]["replicas"] == 3
    assert services["gateway"]["command"][0] == "serve"
    assert services["admin"]["command"][0] == "admin"
    env = services["gateway"]["environment"]
    for name in ("GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL", "GATEWAY_SECRET_KEY",
                 "GATEWAY_KEY_PEPPER", "GATEWAY_TRUSTED_PROXIES"):
        assert env[name], name
    assert services["redis"]["image"].startswith("redis:6")
    assert services["postgres"]["image"].startswith("postgres:15")
    mounted = " ".join(services["haproxy"]["volumes"] + services["prometheus"]["volumes"])
    assert "haproxy/haproxy.cfg" in mounted and "prometheus/prometheus.yml" in mounted


def test_prometheus_scrapes_the_status_port() -> None:
    config = documents(DEPLOY / "prometheus" / "prometheus.yml")[0]
    (job,) = config["scrape_configs"]
    assert job["dns_sd_configs"][0]["port"] == 8082


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "-slim" in text
    user = next(line for line in text.splitlines() if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in {"0", "root"}
    assert "HEALTHCHECK" in text and "/healthz" in text


def test_haproxy_passes_the_client_ip() -> None:
    # How (replaced, never appended to): tests/unit/test_deploy_proxies.py.
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert "set-header X-Forwarded-For %[src]" in text
    assert "X-Forwarded-Proto" in text
