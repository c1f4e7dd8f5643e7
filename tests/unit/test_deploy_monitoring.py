"""The Grafana dashboard and the Prometheus alerts name only metrics (and labels) the status
port exports, read from gateway/observability/metrics.py itself so they cannot drift apart;
the alert rules are well formed, wired into prometheus.yml and compose, and, where promtool
is installed, checked and replayed by it (deploy/prometheus/alerts.test.yml).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "keygate.json"
# Prometheus's own series and labels, which every scrape adds.
BUILTIN_METRICS = {"up"}
BUILTIN_LABELS = {"job", "instance", "__name__"}
_SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_sum", "_count"), "Gauge": ("",)}
_DURATION = re.compile(r"^\d+[smhdwy]$")
_NAME = re.compile(r"\b(keygate_[a-z_]+|up)\b(?:\{([^}]*)\})?")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Series names the status port serves, with their label names, from metrics.py's source."""
    found: dict[str, set[str]] = {}
    tree = ast.parse(Path(metrics.__file__).read_text())
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _SUFFIXES and node.args):
            continue
        name = ast.literal_eval(node.args[0])
        labels = set(ast.literal_eval(node.args[2])) if len(node.args) > 2 else set()
        for suffix in _SUFFIXES[node.func.id]:
            found[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


def unknown_names(expr: str, known: dict[str, set[str]]) -> list[str]:
    """Metric names, label matchers and grouping labels of a PromQL expression that no
    exported series has."""
    wrong = []
    used_labels: set[str] = set()
    names = []
    for name, matchers in _NAME.findall(expr):
        if name in BUILTIN_METRICS:
            names.append(name)
            continue
        if name not in known:
            wrong.append(name)
            continue
        names.append(name)
        for matcher in filter(None, (m.strip() for m in matchers.split(","))):
            label = re.split(r"[=!~]", matcher, maxsplit=1)[0].strip()
            if label not in known[name] | BUILTIN_LABELS:
                wrong.append(f"{name}{{{label}}}")
    for group in _GROUPING.findall(expr):
        used_labels |= {g.strip() for g in group.split(",") if g.strip()}
    available = set().union(*(known.get(n, set()) for n in names)) | BUILTIN_LABELS
    wrong += [f"by ({label})" for label in sorted(used_labels - available)]
    if not _NAME.search(expr):
        wrong.append(f"no metric in {expr!r}")
    return wrong


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            found.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))

    walk(board["panels"])
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_source_reader_finds_the_metrics() -> None:
    known = exported()
    assert known["keygate_requests_total"] == {"route", "method", "status", "code"}
    assert known["keygate_request_seconds_bucket"] == {"route", "le"}
    assert {"keygate_key_cache_total", "keygate_key_store_lookups_total",
            "keygate_invalidations_total", "keygate_rate_limited_total",
            "keygate_upstream_errors_total", "keygate_upstream_seconds_sum"} <= known.keys()


def test_the_checker_sees_drift() -> None:
    known = exported()
    assert unknown_names("rate(keygate_requests_total[5m])", known) == []
    assert unknown_names("rate(keygate_request_total[5m])", known) == ["keygate_request_total"]
    assert unknown_names('keygate_key_cache_total{tier="memory"}', known) == [
        "keygate_key_cache_total{tier}"]
    assert unknown_names("sum by (layer) (keygate_invalidations_total)", known) == [
        "by (layer)"]


def test_the_dashboard_names_only_exported_metrics() -> None:
    known = exported()
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    wrong = {title: unknown_names(expr, known) for title, expr in exprs}
    assert not {title: w for title, w in wrong.items() if w}, wrong
    used = {name for _, expr in exprs for name, _ in _NAME.findall(expr)}
    # Every metric family the gateway exports has a panel.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in known}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families <= shown, families - shown


def test_the_dashboard_is_importable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job"} <= names


def test_the_alerts_are_well_formed() -> None:
    rules = alert_rules()
    assert len(rules) >= 5
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                             "keep_firing_for"}, rule["alert"]
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert "for" not in rule or _DURATION.match(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_the_alerts_name_only_exported_metrics() -> None:
    known = exported()
    wrong = {rule["alert"]: unknown_names(rule["expr"], known) for rule in alert_rules()}
    assert not {name: w for name, w in wrong.items() if w}, wrong


def test_the_alerts_cover_what_ops_must_act_on() -> None:
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for needed in ("keygate_upstream_errors_total", "keygate_key_store_lookups_total",
                   "INVALID_APIKEY", "keygate_invalidations_total", "up{"):
        assert needed in exprs, needed


def test_prometheus_and_compose_load_the_alerts() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in volumes}
    # rule_files are read relative to the configuration file's folder.
    assert Path(mounted["./prometheus/alerts.yml"]).parent == Path(
        mounted["./prometheus/prometheus.yml"]).parent


def test_promtool_accepts_and_replays_the_alerts() -> None:
    """With promtool (Debian's prometheus package) installed: its own check and unit tests.
    Without it, the structure tests above are what checks the rules."""
    promtool = shutil.which("promtool")
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in alert_rules()}, "every alert has a test case"
    if promtool is None:
        return
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("breakage", ["unknown metric", "bad expression"])
def test_promtool_or_the_structure_check_catches_a_broken_rule(tmp_path: Path,
                                                               breakage: str) -> None:
    text = (PROMETHEUS / "alerts.yml").read_text()
    broken = {"unknown metric": text.replace("keygate_upstream_errors_total",
                                             "keygate_upstream_error_total"),
              "bad expression": text.replace("sum(rate(keygate_upstream_errors_total[5m]))",
                                             "sum(rate(keygate_upstream_errors_total[5m])")}
    (tmp_path / "alerts.yml").write_text(broken[breakage])
    rules = [r for g in yaml.safe_load(broken[breakage])["groups"] for r in g["rules"]]
    caught = any(unknown_names(r["expr"], exported()) for r in rules) or any(
        r["expr"].count("(") != r["expr"].count(")") for r in rules)
    assert caught
    promtool = shutil.which("promtool")
    if promtool is not None and breakage == "bad expression":
        done = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=tmp_path,
                              capture_output=True, text=True, check=False)
        assert done.returncode != 0
