"""The Grafana dashboard and its provisioning, checked structurally (Grafana itself is not
installed here: docs/monitoring.md). tests/monitoring/test_prometheus.py runs every panel's
query against a real Prometheus."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from helpers import ROOT

GRAFANA = ROOT / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "model-service.json"
# what the dashboard must show, as words in its panel titles
REQUIRED = ("request rate", "errors", "latency", "batch sizes", "drift per column", "predictions")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def expressions() -> list[str]:
    """Every query of every panel."""
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_the_dashboard_has_a_panel_for_each_thing_the_service_reports() -> None:
    board = dashboard()
    titles = [p["title"].lower() for p in board["panels"]]
    for word in REQUIRED:
        assert any(word in t for t in titles), f"no panel about {word}: {titles}"
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]


def test_every_query_uses_the_provisioned_prometheus() -> None:
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    wanted = {"type": "prometheus", "uid": source["uid"]}
    for panel in dashboard()["panels"]:
        assert panel["datasource"] == wanted, panel["title"]
        assert all(t["datasource"] == wanted for t in panel["targets"]), panel["title"]


def test_the_provider_loads_the_dashboards_folder_the_stack_mounts() -> None:
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/mlpipeline.yml").read_text(encoding="utf-8")
    )["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    volumes = compose["services"]["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{provider['options']['path']}:ro" in volumes
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


def test_the_queries_name_only_metrics_the_service_or_the_rules_write() -> None:
    service = {"http_requests_total", "http_request_errors_total", "predict_rejected_total",
               "http_request_duration_seconds_bucket", "predict_batch_size_sum",
               "predict_batch_size_count", "predict_batch_size_bucket", "model_prediction_total",
               "model_input_unseen_total", "model_info"}  # fmt: skip
    rules = set(
        re.findall(r"record: (\S+)", (ROOT / "monitoring/prometheus/rules.yml").read_text())
    )
    for expr in expressions():
        names = set(re.findall(r"([a-z_:]+)\{", expr))
        assert names and names <= service | rules, expr
        assert 'job="model"' in expr, expr
