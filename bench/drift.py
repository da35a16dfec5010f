"""Drift counters' cost: `/predict` throughput of the service with its drift metrics on (the
default) against the same service with DRIFT_METRICS=false, in one run.

Both servers run side by side (one process each, the same model and profile), loaded in turn by
the same wrk (bench/serve.py's) at concurrency 16, for single rows and 64-row batches of the
test split; the rounds interleave the two servers, half of them with the servers started in the
other order, and the figure is the median over rounds of
the per-pair throughput ratio (on / off), so the load of a shared machine weighs on both alike.
Writes the `drift` section of docs/performance.md.

Usage (from the repository root, after `dvc repro`; wrk from Debian: apt-get install wrk):
    python bench/drift.py [--duration 3] [--rounds 5] [--json results.json] [--smoke]
--smoke: one pair per batch size and order, 1 s runs (wrk counts whole seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import smoke
from record import stamp, write_section
from serve import WRK_SCRIPT, server, wrk

from mlpipeline.ops.docker import free_port

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 64)
CONCURRENCY = 16


def table(results: dict[str, Any]) -> str:
    """The section's table: requests/s (median over rounds) on and off, and the ratio."""
    lines = [
        "| rows per request | drift metrics on, req/s | off, req/s | on / off (median of pairs) |",
        "|---:|---:|---:|---:|",
    ]
    for batch, figures in results["batches"].items():
        lines.append(
            f"| {batch} | {figures['on_rps']:.0f} | {figures['off_rps']:.0f} | "
            f"{figures['ratio']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # wrk counts whole seconds
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="on/off pairs per batch size")
    parser.add_argument("--json", type=Path, help="write all results here")
    args = smoke.parse_args(parser)
    if args.smoke:
        args.duration, args.rounds = 1, 1
    if not shutil.which("wrk"):
        sys.exit("error: wrk not found: apt-get install wrk")
    onnx, profile = ROOT / "models/model.onnx", ROOT / "models/profile.json"
    x_path = ROOT / "data/prepared/test/x.npy"
    for path in (onnx, profile, x_path):
        if not path.is_file():
            sys.exit(f"error: {path} not found: run `dvc repro` first")
    x = np.load(x_path)
    scratch = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    script = scratch / "post.lua"
    script.write_text(WRK_SCRIPT)
    bodies = {}
    for batch in BATCHES:
        bodies[batch] = scratch / f"body{batch}.json"
        bodies[batch].write_text(json.dumps({"inputs": x[:batch].tolist()}))
    ports = {"on": free_port(), "off": free_port()}
    urls = {mode: f"http://127.0.0.1:{port}" for mode, port in ports.items()}
    env = {"MODEL_PATH": str(onnx), "WORKERS": "1"}
    results: dict[str, Any] = {"duration_s": args.duration, "rounds": args.rounds, "batches": {}}
    cmd = [sys.executable, "-m", "mlpipeline.serving"]
    settings = {"on": {}, "off": {"DRIFT_METRICS": "false"}}
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {b: {"on": [], "off": []} for b in BATCHES}
    # twice, the servers started in either order: an A/A run (both off) showed the first one
    # started a few percent slower, whatever it serves
    for order in (("on", "off"), ("off", "on")):
        with contextlib.ExitStack() as stack:
            for mode in order:
                env_mode = {**env, "PORT": str(ports[mode]), **settings[mode]}
                stack.enter_context(server(cmd, env_mode, f"{urls[mode]}/ready"))
            # the counters are really on in one and off in the other
            served = {m: httpx.get(f"{u}/metadata").json()["serving"] for m, u in urls.items()}
            assert served["on"]["drift_metrics"] and not served["off"]["drift_metrics"]
            for batch in BATCHES:
                for url in urls.values():  # warm-up
                    wrk(f"{url}/predict", bodies[batch], script, CONCURRENCY, 1)
                for i in range((args.rounds + 1) // 2):
                    # alternate which goes first, so neither always follows the other
                    for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                        run = wrk(f"{urls[mode]}/predict", bodies[batch], script, CONCURRENCY,
                                  args.duration)  # fmt: skip
                        if run["errors"]:
                            sys.exit(f"error: {run['errors']} failed requests ({mode}, {batch})")
                        runs[batch][mode].append(run)
            assert "model_prediction_total" in httpx.get(f"{urls['on']}/metrics").text
    shutil.rmtree(scratch)
    for batch, by_mode in runs.items():
        pairs = zip(by_mode["on"], by_mode["off"], strict=True)
        ratios = [a["rps"] / b["rps"] for a, b in pairs]
        results["batches"][batch] = {
            "on_rps": statistics.median(r["rps"] for r in by_mode["on"]),
            "off_rps": statistics.median(r["rps"] for r in by_mode["off"]),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["batches"], indent=2))
    worst = min(f["ratio"] for f in results["batches"].values())
    pairs = len(results["batches"][BATCHES[0]]["ratios"])
    verdict = "meeting the goal" if worst >= 0.9 else "below the goal of 0.9"
    body = f"""{stamp()}

`/predict` of the digits model (`models/model.onnx`, its `models/profile.json`: {x.shape[1]}
channel(s), 2 image statistics and 10 classes) with the drift counters on (the default) and
off (`DRIFT_METRICS=false`), two servers of one process each side by side, wrk at
concurrency {CONCURRENCY}, interleaved pairs of {args.duration:g} s runs per batch size, half
of them with the servers started in the other order (an A/A run showed the first started
a few percent slower). The ratio is the median of the per-pair ratios ({pairs} pairs; the
issue's goal: at least 0.9).

{table(results)}

Lowest ratio: {worst:.3f}, {verdict}. A request only queues its inputs and outputs; each
worker counts its queue at once (a few numpy calls per column for all of it) at every `/metrics`
and every `DRIFT_FLUSH_SECONDS`, so the cost per request is the queueing plus its share of a
flush. A table model's cost grows with its number of columns.
"""
    write_section("drift", "Drift metrics: throughput with and without", body)


if __name__ == "__main__":
    main()
