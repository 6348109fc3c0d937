"""Static checks of deploy/: Prometheus rules, Grafana, Filebeat, compose, Nginx.

Docker cannot run in the test environment, so the compose stack is checked
file by file: every YAML and JSON parses, every metric a rule or panel uses
exists in wsgishield, rules pass ``promtool check rules`` and their unit
tests pass ``promtool test rules`` (Debian package ``prometheus``), and the
Nginx config passes ``nginx -t``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from wsgishield import metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "wsgishield.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "wsgishield.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "wsgishield.json"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"

PROMQL_KEYWORDS = {
    "sum",
    "by",
    "rate",
    "increase",
    "max",
    "and",
    "unless",
    "or",
    "topk",
    "histogram_quantile",
    "le",
    "without",
    "on",
    "offset",
    "bool",
}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def exposed_names() -> set[str]:
    """Every sample name wsgishield exposes, plus Prometheus' own ``up``."""
    names = {"up"}
    for family in metrics.REGISTRY.families.values():
        if family.kind == "counter":
            names.add(family.name + "_total")
        elif family.kind == "histogram":
            names.update(
                family.name + suffix for suffix in ("_bucket", "_count", "_sum")
            )
        else:
            names.add(family.name)
    return names


def metric_names(expression: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers before ``{`` or ``[``)."""
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    found = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[\{\[]", without_labels))
    return {name for name in found if ":" not in name and name not in PROMQL_KEYWORDS}


@pytest.mark.parametrize(
    "path",
    sorted(DEPLOY.rglob("*.yml")),
    ids=lambda path: str(path.relative_to(DEPLOY)),
)
def test_yaml_parses(path: Path) -> None:
    assert load_yaml(path) is not None


def test_dashboard_parses() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "wsgishield"


def grouping_labels(expression: str) -> set[str]:
    """Labels named in ``by (...)`` clauses of a PromQL expression."""
    found: set[str] = set()
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expression):
        found.update(label.strip() for label in group.split(",") if label.strip())
    return found


def known_labels() -> set[str]:
    labels = {"job", "instance", "le"}
    for family in metrics.REGISTRY.families.values():
        labels.update(family.labelnames)
    return labels


def test_rules_group_by_existing_labels() -> None:
    known = known_labels()
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            unknown = grouping_labels(rule["expr"]) - known
            assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_dashboard_groups_by_existing_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    known = known_labels()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            unknown = grouping_labels(target["expr"]) - known
            assert not unknown, (panel["title"], unknown)


def test_rules_use_existing_metrics() -> None:
    known = exposed_names()
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_required_alerts_present() -> None:
    alerts = {
        rule["alert"]
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert alerts >= {
        "WsgishieldErrorBudgetBurnFast",
        "WsgishieldErrorBudgetBurnSlow",
        "WsgishieldLatencyBudgetBurnFast",
        "WsgishieldLatencyBudgetBurnSlow",
        "WsgishieldRateLimitSpike",
        "WsgishieldBanSpike",
        "WsgishieldAuthFailureSpike",
        "WsgishieldRedisBreakerOpen",
        "WsgishieldJwksFailing",
        "WsgishieldMetricsSeriesCapHit",
    }


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for test in load_yaml(RULE_TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - tested == set()


def test_latency_bucket_in_rules_exists() -> None:
    bounds = {
        metrics._format_bound(bound) for bound in metrics.HTTP_REQUEST_DURATION.bounds
    }
    used = set(re.findall(r'le="([^"]+)"', RULES.read_text(encoding="utf-8")))
    assert used <= bounds


def test_dashboard_panels_use_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    known = exposed_names()
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus"
            unknown = metric_names(target["expr"]) - known
            assert not unknown, (panel["title"], unknown)


def test_dashboard_shows_required_views() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Requests by decision",
        "Latency quantiles (allowed requests)",
        "Decisions by layer and action",
        "Top rules",
    } <= titles


def test_compose_stack_services() -> None:
    compose = load_yaml(COMPOSE)
    assert {"nginx", "app", "redis", "prometheus", "grafana"} <= set(
        compose["services"]
    )
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), (name, source)


def test_compose_wires_metrics_and_events() -> None:
    compose = load_yaml(COMPOSE)
    environment = compose["services"]["app"]["environment"]
    assert environment["PROMETHEUS_MULTIPROC_DIR"]
    port = environment["WSGISHIELD_METRICS_PORT"]
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [
        target
        for job in scrape["scrape_configs"]
        if job["job_name"] == "wsgishield"
        for config in job["static_configs"]
        for target in config["targets"]
    ]
    assert targets == [f"app:{port}"]

    events_log = Path(environment["WSGISHIELD_EVENTS_LOG"])
    filebeat = load_yaml(DEPLOY / "filebeat" / "filebeat.yml")
    (source,) = filebeat["filebeat.inputs"]
    assert any(Path(pattern).parent == events_log.parent for pattern in source["paths"])
    assert source["parsers"][0]["ndjson"]["expand_keys"] is True


def test_grafana_provisioning_matches_compose() -> None:
    compose = load_yaml(COMPOSE)
    volumes = compose["services"]["grafana"]["volumes"]
    mounted = {volume.split(":")[1] for volume in volumes}
    provider = load_yaml(
        DEPLOY / "grafana" / "provisioning" / "dashboards" / "wsgishield.yml"
    )
    assert provider["providers"][0]["options"]["path"] in mounted
    datasource = load_yaml(
        DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    )
    assert datasource["datasources"][0]["uid"] == "prometheus"


def test_compose_policy_is_valid() -> None:
    from wsgishield.policy import load_policy

    policy = load_policy(DEPLOY / "compose" / "shield.toml")
    assert policy.metrics is not None
    assert policy.metrics.allow == []


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return binary


def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config(tmp_path: Path) -> None:
    # The config names rule files by their path inside the container.
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    config["rule_files"] = [str(RULES)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [promtool(), "check", "config", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.nginx
def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx is not installed")
    # "app" resolves only inside the compose network.
    text = (DEPLOY / "compose" / "nginx.conf").read_text(encoding="utf-8")
    text = text.replace("server app:8000", "server 127.0.0.1:8000")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
    config = tmp_path / "nginx.conf"
    config.write_text(text, encoding="utf-8")
    (tmp_path / "logs").mkdir()
    result = subprocess.run(
        [binary, "-t", "-q", "-p", str(tmp_path), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["compose/nginx.conf", "nginx/wsgishield.conf"])
def test_nginx_config_blocks_metrics(name: str) -> None:
    text = (DEPLOY / name).read_text(encoding="utf-8")
    assert re.search(r"location = /metrics \{\s*return 404;", text)
