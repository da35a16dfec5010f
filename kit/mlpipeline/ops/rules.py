"""The Prometheus rules of the service, written from the config (conf/monitoring):

    python -m mlpipeline.ops.rules                  (or: make rules)

writes monitoring/prometheus/rules.yml. Recording rules score the drift counters of
`serving.drift` against the reference shares the service exposes beside them: per column (and
for the predictions) the observed share of each bin over `monitoring.drift.window`, then the
population stability index (PSI), sum over bins of (a - r) * ln(a / r) with both shares floored
at `epsilon`, exactly as `serving.profile.psi` computes it offline. Alert rules: drift warning
and critical per column and for the predictions (only with `min_rows` rows in the window), the
5xx and 4xx shares of /predict, its p99 latency, and the service not scraped (down or not
ready: the service answers /metrics only once its model is loaded).

Recorded series (labels job, instance, and column for the inputs):
    model:input_bin:increase        rows per column and bin in the window
    model:input_bin:share           their share of the column's rows
    model:input_psi                 PSI per column
    model:prediction_bin:increase   predictions per class or score bin in the window
    model:prediction_bin:share      their share
    model:prediction_psi            PSI of the predictions
    model:rows:increase             rows predicted in the window
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from mlpipeline.artifacts import atomic_path
from mlpipeline.config import load_config
from mlpipeline.config.schema import Monitoring
from mlpipeline.errors import PipelineError, exit_on_error

RULES_FILE = Path("monitoring/prometheus/rules.yml")
HEADER = (
    "# Written by `make rules` (mlpipeline.ops.rules) from conf/monitoring: edit the config and\n"
    "# run it again rather than editing this file. What each rule means: docs/monitoring.md.\n"
)


def _psi(share: str, reference: str, keys: str, epsilon: float) -> str:
    """PromQL for the PSI of the `share` series against the `reference` gauges, matched on
    `keys` plus bin and summed over the bins."""
    a = f"clamp_min({share}, {epsilon!r})"
    r = f"clamp_min(max by ({keys}, bin) ({reference}), {epsilon!r})"
    on = f"on ({keys}, bin)"
    return f"sum by ({keys}) (\n  ({a} - {on} {r})\n  * ln({a} / {on} {r})\n)"


def _recording(
    part: str, counter: str, reference: str, keys: str, m: Monitoring
) -> list[dict[str, Any]]:
    """The increase, share and PSI rules of one kind of counter (inputs or predictions)."""
    job, window = m.alerts.job, m.drift.window
    increase = f"model:{part}_bin:increase"
    share = f"model:{part}_bin:share"
    return [
        {
            "record": increase,
            "expr": f'sum by ({keys}, bin) (increase({counter}{{job="{job}"}}[{window}]))',
        },
        {
            "record": share,
            "expr": f"{increase}\n/ on ({keys}) group_left ()\nsum by ({keys}) ({increase})",
        },
        {
            "record": f"model:{part}_psi",
            "expr": _psi(share, f'{reference}{{job="{job}"}}', keys, m.drift.epsilon),
        },
    ]


def _drift_alert(
    name: str, score: str, what: str, severity: str, threshold: float, m: Monitoring
) -> dict[str, Any]:
    """A drift alert: `score` above `threshold`, on enough rows in the window."""
    return {
        "alert": name,
        "expr": f"{score} > {threshold!r}\nand on (job, instance) (model:rows:increase >= "
        f"{m.drift.min_rows})",
        "for": m.drift.hold,
        "labels": {"severity": severity},
        "annotations": {
            "summary": f'{what} drift {severity}: PSI {{{{ $value | printf "%.3f" }}}} over '
            f"{m.drift.window} (threshold {threshold!r})",
            "description": "The served inputs or predictions no longer look like the training "
            "split's (docs/monitoring.md): check the data source, then consider retraining.",
        },
    }


def rules(m: Monitoring, interval: str = "15s") -> dict[str, Any]:
    """The rules file's content for the monitoring config `m`, evaluated every `interval`."""
    job, a = m.alerts.job, m.alerts
    predict = f'job="{job}", route="/predict"'
    keys = "job, instance"
    recording = [
        *_recording("input", "model_input_bin_total", "model_input_reference_share",
                    f"{keys}, column", m),
        *_recording("prediction", "model_prediction_total", "model_prediction_reference_share",
                    keys, m),
        {
            "record": "model:rows:increase",
            "expr": f'sum by ({keys}) (increase(model_prediction_total{{job="{job}"}}'
            f"[{m.drift.window}]))",
        },
    ]  # fmt: skip
    d = m.drift
    column = "column {{ $labels.column }}"
    alerts = [
        _drift_alert("ModelInputDriftWarning", "model:input_psi", column, "warning", d.warning, m),
        _drift_alert("ModelInputDriftCritical", "model:input_psi", column, "critical", d.critical,
                     m),
        _drift_alert("ModelPredictionDriftWarning", "model:prediction_psi", "prediction",
                     "warning", d.warning, m),
        _drift_alert("ModelPredictionDriftCritical", "model:prediction_psi", "prediction",
                     "critical", d.critical, m),
        _ratio_alert("ModelErrorRatio", "5..", "answered with a 5xx", a.error_ratio, predict, m),
        _ratio_alert("ModelRejectRatio", "4..", "refused with a 4xx", a.reject_ratio, predict, m),
        {
            "alert": "ModelLatencyP99",
            "expr": "histogram_quantile(0.99, sum by (job, instance, le) (rate("
            f"http_request_duration_seconds_bucket{{{predict}}}[{a.rate_window}])))\n"
            f"> {a.latency_p99_s!r}",
            "for": a.hold,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "p99 latency of /predict {{ $value | humanizeDuration }} over "
                f"{a.rate_window} (threshold {a.latency_p99_s!r} s)",
            },
        },
        {
            "alert": "ModelNotReady",
            "expr": f'up{{job="{job}"}} == 0 or absent(up{{job="{job}"}})',
            "for": a.down_for,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"The model service (job {job}) has not answered /metrics for "
                f"{a.down_for}: down, or its model not loaded",
            },
        },
    ]  # fmt: skip
    return {
        "groups": [
            {"name": "model-drift", "interval": interval, "rules": recording},
            {"name": "model-alerts", "interval": interval, "rules": alerts},
        ]
    }


def _ratio_alert(
    name: str, status: str, what: str, ratio: float, predict: str, m: Monitoring
) -> dict[str, Any]:
    """The share of /predict answered with `status` (a regex) above `ratio`."""
    window = m.alerts.rate_window
    return {
        "alert": name,
        "expr": f'sum by (job, instance) (rate(http_requests_total{{{predict}, status=~"{status}"}}'
        f"[{window}]))\n/ sum by (job, instance) (rate(http_requests_total{{{predict}}}"
        f"[{window}]))\n> {ratio!r}",
        "for": m.alerts.hold,
        "labels": {"severity": "critical" if status.startswith("5") else "warning"},
        "annotations": {
            "summary": f"{{{{ $value | humanizePercentage }}}} of /predict {what} over {window} "
            f"(threshold {ratio!r})",
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as YAML block text, so the file reads like PromQL."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def rules_text(m: Monitoring, interval: str = "15s") -> str:
    """The rules file as YAML text, its groups evaluated every `interval`."""
    body = yaml.dump(rules(m, interval), Dumper=_Dumper, sort_keys=False, width=100)
    return HEADER + body


def write_rules(m: Monitoring, path: Path, interval: str = "15s") -> None:
    """Write the rules file to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(rules_text(m, interval), encoding="utf-8")


def main() -> None:
    """CLI: `--params` (params.yaml) in, `--out` (monitoring/prometheus/rules.yml) out."""
    parser = argparse.ArgumentParser(description="Write the Prometheus rules from the config.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=RULES_FILE)
    parser.add_argument("--interval", default="15s", help="rule evaluation interval")
    args = parser.parse_args()
    with exit_on_error():
        if not args.params.is_file():
            raise PipelineError(f"{args.params} not found: run from the repository root")
        write_rules(load_config(args.params).monitoring, args.out, args.interval)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
