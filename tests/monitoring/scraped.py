"""A real Prometheus server on loopback scraping the real model server (python -m
mlpipeline.serving, two workers), for the monitoring tests: the rules of mlpipeline.ops.rules
with a short window, a 1 s scrape and evaluation interval, a temporary config and database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from helpers import CONF, free_port, stop, wait_for_server

from mlpipeline.config import compose_config
from mlpipeline.ops.rules import rules_text
from mlpipeline.ops.wait import wait_until

# short enough that a test sees its traffic scored and its alerts fire within seconds; the
# window still holds every phase of a test
MONITORING = [
    "monitoring.drift.window=5m",
    "monitoring.drift.for=2s",
    "monitoring.drift.min_rows=500",
    "monitoring.alerts.for=2s",
]
INTERVAL_S = 1.0
# how often each worker adds its queued requests to the drift counters
FLUSH_S = 0.2


@dataclass
class Monitored:
    """The running model server and the Prometheus that scrapes it."""

    model_url: str
    prometheus_url: str
    monitoring: Any  # the config's monitoring section the rules were written from

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        answer = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr})
        body = answer.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def values(self, expr: str, *keys: str) -> dict[tuple[str, ...], float]:
        """An instant query's values, keyed by the values of the labels `keys`."""
        return {
            tuple(r["metric"].get(k, "") for k in keys): float(r["value"][1])
            for r in self.query(expr)
        }

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's alerts, pending and firing: [{"labels", "state", ...}]."""
        return httpx.get(f"{self.prometheus_url}/api/v1/alerts").json()["data"]["alerts"]

    def latest(self, expr: str) -> float | None:
        """The timestamp of the newest sample `expr` selects, or None."""
        found = self.query(f"max(timestamp({expr}))")
        return float(found[0]["value"][1]) if found else None

    def settle(self, timeout_s: float = 60) -> None:
        """Wait until Prometheus has scraped the server after now, then evaluated the rules
        on that scrape: its answers then reflect every request sent before the call, once
        every worker has flushed its drift counts."""
        sent = time.time() + FLUSH_S

        def scraped() -> float | None:
            ts = self.latest('up{job="model"}')
            return ts if ts is not None and ts > sent else None

        scrape = wait_until(scraped, timeout_s, "no scrape after the traffic", 0.2)

        def evaluated() -> bool | None:
            ts = self.latest("model:rows:increase")
            # a second evaluation after the scrape: the first may have run while it was stored
            return True if ts is not None and ts > scrape + INTERVAL_S else None

        wait_until(evaluated, timeout_s, "no rule evaluation after the scrape", 0.2)

    def firing(self, alertname: str, timeout_s: float = 60, **labels: str) -> dict[str, Any]:
        """Wait until the alert `alertname` with `labels` is firing; return it."""

        def found() -> dict[str, Any] | None:
            for alert in self.alerts():
                wanted = {"alertname": alertname, **labels}
                if alert["state"] == "firing" and wanted.items() <= alert["labels"].items():
                    return alert
            return None

        return wait_until(found, timeout_s, f"{alertname} {labels} not firing", 0.5)


def _log(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@contextlib.contextmanager
def monitored(binary: str, model: Path, work: Path, workers: int = 2) -> Iterator[Monitored]:
    """Serve `model` (its card and profile beside it) with `workers` processes, and run the
    Prometheus `binary`, scraping it and evaluating the rules; stop both at the end."""
    work.mkdir(parents=True, exist_ok=True)
    model_port, prometheus_port = free_port(), free_port()
    monitoring = compose_config(CONF, MONITORING)[1].monitoring
    (work / "rules.yml").write_text(rules_text(monitoring, f"{INTERVAL_S:g}s"), encoding="utf-8")
    config = {
        "global": {"scrape_interval": f"{INTERVAL_S:g}s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {
                "job_name": monitoring.alerts.job,
                "static_configs": [{"targets": [f"127.0.0.1:{model_port}"]}],
            }
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {
        **os.environ,
        "MODEL_PATH": str(model),
        "PORT": str(model_port),
        "WORKERS": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "REQUEST_LOG": "false",
        "DRIFT_FLUSH_SECONDS": str(FLUSH_S),
    }
    (work / "metrics").mkdir(exist_ok=True)
    with (work / "model.log").open("w") as model_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlpipeline.serving"],
            env=env, stdout=model_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    prometheus = None
    try:
        wait_for_server(server, f"http://127.0.0.1:{model_port}/ready", 90,
                        lambda: _log(work / "model.log"))  # fmt: skip
        with (work / "prometheus.log").open("w") as prometheus_log:
            prometheus = subprocess.Popen(
                [
                    binary,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                cwd=work, stdout=prometheus_log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{prometheus_port}"
        wait_for_server(prometheus, f"{url}/-/ready", 60, lambda: _log(work / "prometheus.log"))
        running = Monitored(f"http://127.0.0.1:{model_port}", url, monitoring)
        # the first scrape sees every counter at 0: the window's increase then counts it all
        wait_until(
            lambda: True if running.values('up{job="model"}') == {(): 1.0} else None,
            60, "Prometheus did not scrape the model server", 0.2,
        )  # fmt: skip
        yield running
    finally:
        for proc in (prometheus, server):
            if proc is not None:
                stop(proc)
