"""The rules file: written from the config and committed as written, valid for promtool, its
unit tests passing, and the PSI it records the same as serving.profile.psi."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import yaml
from helpers import CONF, ROOT, copy_tracked_files, make_command, one_line_error, run

from mlpipeline.config import compose_config
from mlpipeline.ops.rules import RULES_FILE, rules_text
from mlpipeline.serving.profile import psi

RULES = ROOT / RULES_FILE
RULE_TESTS = RULES.with_name("rules.test.yml")


def test_the_committed_rules_are_what_make_rules_writes_from_the_default_config() -> None:
    _, cfg = compose_config(CONF)
    assert RULES.read_text(encoding="utf-8") == rules_text(cfg.monitoring), "run `make rules`"


def test_make_rules_writes_them_from_params_yaml(tmp_path) -> None:
    repo = copy_tracked_files(tmp_path / "repo")
    (repo / RULES_FILE).unlink()
    proc = run(make_command("rules"), repo)
    assert f"wrote {RULES_FILE}" in proc.stdout
    assert (repo / RULES_FILE).read_text(encoding="utf-8") == RULES.read_text(encoding="utf-8")


def test_the_thresholds_and_window_come_from_the_config() -> None:
    overrides = ["monitoring.drift.window=10m", "monitoring.drift.critical=0.4",
                 "monitoring.alerts.job=scorer", "monitoring.drift.min_rows=7"]  # fmt: skip
    _, cfg = compose_config(CONF, overrides)
    groups = yaml.safe_load(rules_text(cfg.monitoring, "5s"))["groups"]
    assert {g["interval"] for g in groups} == {"5s"}
    by_name = {r.get("record") or r["alert"]: r for g in groups for r in g["rules"]}
    assert '{job="scorer"}[10m]' in by_name["model:input_bin:increase"]["expr"]
    critical = by_name["ModelInputDriftCritical"]["expr"]
    assert "model:input_psi > 0.4" in critical and ">= 7" in critical
    assert 'up{job="scorer"}' in by_name["ModelNotReady"]["expr"]


def test_promtool_checks_the_rules(promtool: str) -> None:
    proc = run([promtool, "check", "rules", str(RULES)], ROOT)
    assert "SUCCESS: 15 rules found" in proc.stdout


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    proc = run([promtool, "test", "rules", RULE_TESTS.name], RULES.parent)
    assert "SUCCESS" in proc.stdout


def test_the_rules_unit_tests_fail_when_a_rule_is_wrong(promtool: str, tmp_path) -> None:
    # the tests can fail: the same tests against rules whose critical threshold is off
    wrong = RULES.read_text(encoding="utf-8").replace(
        "model:input_psi > 0.25", "model:input_psi > 5"
    )
    (tmp_path / "rules.yml").write_text(wrong, encoding="utf-8")
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text(encoding="utf-8"))
    proc = run([promtool, "test", "rules", RULE_TESTS.name], tmp_path, check=False)
    assert proc.returncode != 0 and "alertname: ModelInputDriftCritical" in proc.stderr


def test_the_psi_the_rules_tests_expect_is_serving_profiles_psi() -> None:
    samples = {
        tuple(sorted(re.findall(r'(\w+)="([^"]*)"', s["labels"]))): s["value"]
        for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        for expr in test.get("promql_expr_test", [])
        for s in expr["exp_samples"]
        if "_psi{" in s["labels"]
    }
    width, color, prediction = (
        samples[tuple(sorted({"job": "model", "instance": "a", **extra}.items()))]
        for extra in ({"column": "width"}, {"column": "color"}, {})
    )
    assert width == psi([10, 10], [0.5, 0.5], 1e-4) == 0
    assert color == pytest.approx(psi([20, 0], [0.5, 0.5], 1e-4), rel=1e-12)
    assert prediction == pytest.approx(psi([20, 0], [0.98, 0.02], 1e-4), rel=1e-12)
    assert math.isfinite(color)


def test_make_rules_without_params_says_so_in_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlpipeline.ops.rules", "--params", str(tmp_path / "none.yaml")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    one_line_error(proc, "none.yaml not found")


def test_the_install_script_leaves_an_installed_prometheus_alone(promtool: str) -> None:
    # CI calls it before the tests (.ci/run, ci.yml); where both binaries exist it does nothing
    proc = run(["bash", str(ROOT / "scripts" / "install-test-tools.sh"), "prometheus"], ROOT)
    assert proc.stdout == "" and proc.stderr == ""
