"""Serving benchmark: this project's service against `mlflow models serve` of the same
registered model, side by side in one run, with the same load generator (wrk).

For single rows and 64-row batches at concurrency 1, 16 and 64: requests/s and p50/p99
latency for both servers, each one process (WORKERS=1 here, `-w 1` for MLflow); medians over
rounds that alternate the two servers. Then the HTTP overhead (end-to-end p50 at concurrency 1
against the in-process ONNX Runtime call on the same batch) and a soak run: 10,000 requests at
concurrency 64 against this service, counting errors and its resident memory before and after.

Usage (from the repository root, after `dvc repro`; wrk from Debian: apt-get install wrk):
    python bench/serve.py [--duration 5] [--rounds 3] [--json results.json] [--smoke]
Servers listen on 127.0.0.1 only. MLflow's store: env MLFLOW_TRACKING_URI, default
sqlite:///<repo>/mlflow.db; the model served is the project's registered model (params.yaml's
tracking.registered_model), the version whose run logged the ONNX md5 of models/model.onnx.

    python bench/serve.py --table [--rows 20000] [--duration 5] [--rounds 3] [--smoke]
A table model instead, requests of named records: the stages after compose run on a
synthetic table (bench/synthetic.py: 50 columns, 5 classes; tabular defaults, one epoch) in a
temporary directory with its own MLflow store; this service takes `{"records": [...]}` and
MLflow the same rows as `{"dataframe_records": [...]}`. Goals (issue 15): requests/s at least
3x MLflow's and p99 latency at most a third of MLflow's, at every point. Writes its own
section, apart from the image model's.

    python bench/serve.py --image-file [--duration 5] [--rounds 3] [--smoke]
An image model taking files instead (issue 33): one 224x224 JPEG per request, as a multipart
field `file` (curl -F file=@cat.jpg), at concurrency 1: wrk's end-to-end p50 latency against
the in-process decode (mlpipeline.imaging, through the service's own parsing) and ONNX Runtime
call, in alternating rounds; goal: at most 3x. The model: the repository's when it takes image
files, else a stand-in exported to a temporary folder as the pipeline exports one (timm's
resnet18, random weights, 10 classes, uint8 224x224 RGB cast and normalised inside). Writes its
own section.

--smoke (any form): one round of 1 s runs (wrk counts whole seconds), 200 soak requests;
--table on 2,000 rows.

--baseline REV (either form): also serve the same model with this service as of git revision
REV (its kit/ or src/, from `git archive`, first on PYTHONPATH, in the same venv), in the same
alternating rounds, and report before (REV) against after (the working tree) at every point:
requests/s and p99, with their ratios (issue 31's goal: after within 5% of before).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import smoke
import yaml
from record import stamp, write_section

from mlpipeline.artifacts import md5_file
from mlpipeline.config import load_config
from mlpipeline.ops.docker import free_port
from mlpipeline.serving.model import Model, load_model
from mlpipeline.serving.parsing import parse_inputs, parse_records
from mlpipeline.serving.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 16, 64)
BATCHES = (1, 64)
GOALS = {"rps_ratio": 3.0, "p99_ratio": 1 / 3}  # --table: ours against MLflow, at every point
IMAGE_GOAL = 3.0  # --image-file: HTTP p50 at most this many times the in-process call's
IMAGE_SIDE = 224  # --image-file: the JPEG's width and height, and the stand-in model's
BASELINE_TOLERANCE = 0.05  # --baseline: after's requests/s at most 5% below before's
# --table: the stages after compose (run_stages composes the config itself), as dvc.yaml lists
# them, so that a stage added there (as profile was, which register needs) runs here too
TABLE_STAGES = tuple(
    stage
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    if stage != "compose"
)

WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_TYPE") or "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def baseline_tree(rev: str, dest: Path) -> Path:
    """The folder holding the mlpipeline package at git revision `rev` of this repository
    (kit/, or src/ before the kit had its own), extracted under `dest`; returns it. Fails
    unless a Python started with it on PYTHONPATH imports mlpipeline from there (and not the
    venv's editable install of the working tree)."""
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", rev, "kit/mlpipeline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    folder = "kit" if listed.stdout.strip() else "src"
    proc = subprocess.run(
        ["git", "archive", "--format=tar", rev, folder], cwd=ROOT, capture_output=True
    )
    if proc.returncode != 0:
        sys.exit(f"error: --baseline {rev}: {proc.stderr.decode().strip()}")
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=proc.stdout, check=True)
    src = dest / folder
    where = subprocess.run(
        [sys.executable, "-c", "import mlpipeline.serving as m; print(m.__file__)"],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).is_relative_to(src):
        sys.exit(f"error: --baseline {rev}: mlpipeline imports from {where}, not {src}")
    return src


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def server(cmd: list[str], env: dict[str, str], ready_url: str) -> Iterator[subprocess.Popen]:
    """Start a server in its own process group, wait until `ready_url` answers 200, and stop
    the group (this process's child and its workers) afterwards."""
    with tempfile.TemporaryFile() as log:
        # the venv's bin first: `mlflow models serve` runs `uvicorn` through a shell
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, "PATH": path, **env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    sys.exit(f"error: {cmd[0]} exited: {log.read().decode()[-2000:]}")
                try:
                    if httpx.get(ready_url, timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit(f"error: {ready_url} not ready after 120 s")
                time.sleep(0.2)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):  # the group may have exited already
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wrk(
    url: str,
    body: Path,
    script: Path,
    concurrency: int,
    seconds: float,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One wrk run (one thread: the servers get the other core); its summary as a dict."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    env = {**os.environ, "WRK_BODY": str(body), "WRK_TYPE": content_type}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-figure medians over rounds (the host is shared: single runs swing widely); errors
    are summed."""
    out = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_us", "p99_us")}
    return {**out, "errors": sum(r["errors"] for r in runs), "rounds": runs}


def paired_ratios(after: list[dict[str, Any]], before: list[dict[str, Any]]) -> dict[str, float]:
    """Medians of the per-round ratios after/before of requests/s and p99: each round's two
    runs were back to back, so a change in the machine's load between rounds cancels out."""
    return {
        k: statistics.median(a[k] / b[k] for a, b in zip(after, before, strict=True))
        for k in ("rps", "p99_us")
    }


def soak(url: str, body: bytes, total: int, concurrency: int) -> dict[str, int]:
    """Exactly `total` POSTs with `concurrency` in flight (wrk runs by duration, not count);
    a non-200 answer or a transport error counts as an error."""

    async def run() -> dict[str, int]:
        sent, errors = 0, 0
        limits = httpx.Limits(max_connections=concurrency)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def worker() -> None:
                nonlocal sent, errors
                while sent < total:
                    sent += 1
                    try:
                        answer = await client.post(url, content=body, headers=headers)
                        errors += answer.status_code != 200
                    except httpx.HTTPError:
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {"requests": sent, "errors": errors}

    return asyncio.run(run())


def mlflow_version(tracking_uri: str, name: str, onnx_md5: str) -> str:
    """The registered version of model `name` whose run logged this ONNX file."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    matching = [
        v for v in versions if client.get_run(v.run_id).data.tags.get("onnx_md5") == onnx_md5
    ]
    if not matching:
        sys.exit(f"error: no registered {name} version has onnx_md5 {onnx_md5}")
    return str(max(int(v.version) for v in matching))


@dataclass
class Subject:
    """The model both servers serve, and the request bodies for each batch size."""

    onnx: Path
    tracking_uri: str
    model_name: str
    version: str = ""
    ours: dict[int, bytes] = field(default_factory=dict)  # this service's bodies
    mlflow: dict[int, bytes] = field(default_factory=dict)  # the same rows, MLflow's way
    records: bool = False


def image_subject() -> Subject:
    """The repository's own model (after `dvc repro`), test images as `inputs` to both."""
    onnx = ROOT / "models/model.onnx"
    x_path = ROOT / "data/prepared/test/x.npy"
    for path in (onnx, x_path):
        if not path.is_file():
            sys.exit(f"error: {path} not found: run `dvc repro` first")
    x = np.load(x_path)
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT}/mlflow.db")
    name = load_config(ROOT / "params.yaml").tracking.registered_model
    subject = Subject(onnx, uri, name)
    for batch in BATCHES:
        subject.ours[batch] = json.dumps({"inputs": x[:batch].tolist()}).encode()
    subject.mlflow = dict(subject.ours)
    return subject


def table_subject(base: Path, rows: int) -> Subject:
    """A table model made and registered under `base` by the stages; the test split's rows
    as named records (missing values as null)."""
    import pyarrow.parquet as pq
    from synthetic import run_stages

    uri = f"sqlite:///{base / 'mlflow.db'}"
    # the stages' MLflow store is the temporary one, not the repository's
    env = os.environ | {"MLFLOW_TRACKING_URI": uri}
    params = run_stages(base, rows, TABLE_STAGES, ["trainer.max_epochs=1"], env=env)
    cfg = load_config(params)
    test = pq.read_table(cfg.paths.prepared / "test" / "x.parquet").to_pylist()
    subject = Subject(cfg.paths.onnx, uri, cfg.tracking.registered_model, records=True)
    for batch in BATCHES:
        subject.ours[batch] = json.dumps({"records": test[:batch]}).encode()
        subject.mlflow[batch] = json.dumps({"dataframe_records": test[:batch]}).encode()
    return subject


def probabilities(answer: dict[str, Any]) -> np.ndarray:
    """The class probabilities in an answer of this service (one object per input, classes
    as keys) or MLflow's (`predictions`, by output name or one object per row)."""
    if "probabilities" in answer:
        rows = answer["probabilities"]
        if rows and isinstance(rows[0], list):  # a baseline from before one answer shape
            return np.asarray(rows, dtype=float)
        return np.asarray([list(r.values()) for r in rows], dtype=float)
    predictions = answer["predictions"]
    if isinstance(predictions, dict):
        return np.asarray(predictions["probabilities"], dtype=float)
    return np.asarray([r["probabilities"] for r in predictions], dtype=float)


def in_process(subject: Subject, repeats: int) -> dict[int, dict[str, float]]:
    """ONNX Runtime alone, with the service's own session settings, per batch size (µs), on
    the inputs the service makes of each body (parsed before the clock starts)."""
    model: Model = load_model(Settings(model_path=subject.onnx))
    out = {}
    for batch in BATCHES:
        body = subject.ours[batch]
        if model.records:
            feeds = parse_records(body, model.columns, batch)
        else:
            name = getattr(model.card.input, "name", "")
            feeds = {name: parse_inputs(body, model.example_shape, batch)}
        for _ in range(100):
            model.predict(feeds)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(feeds)
            times.append((time.perf_counter() - start) * 1e6)
        times.sort()
        out[batch] = {"p50_us": statistics.median(times), "p99_us": times[int(0.99 * len(times))]}
    return out


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per batch size and concurrency, both servers side by side."""
    lines = [
        "| rows/request | concurrency | ours req/s | MLflow req/s | throughput × | "
        "ours p50 / p99 ms | MLflow p50 / p99 ms | p99 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for point in results["load"]:
        ours, theirs = point["ours"], point["mlflow"]
        lines.append(
            f"| {point['batch']} | {point['concurrency']} | {ours['rps']:,.0f} | "
            f"{theirs['rps']:,.0f} | {ours['rps'] / theirs['rps']:.1f} | "
            f"{ours['p50_us'] / 1e3:.2f} / {ours['p99_us'] / 1e3:.2f} | "
            f"{theirs['p50_us'] / 1e3:.2f} / {theirs['p99_us'] / 1e3:.2f} | "
            f"{ours['p99_us'] / theirs['p99_us']:.2f} |"
        )
    return "\n".join(lines)


def baseline_table(results: dict[str, Any]) -> str:
    """Markdown: this service before (the baseline revision) and after, per point."""
    lines = [
        "| rows/request | concurrency | before req/s | after req/s | after / before | "
        "before p99 ms | after p99 ms | p99 after / before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for point in results["load"]:
        before, after, ratio = point["baseline"], point["ours"], point["after_before"]
        lines.append(
            f"| {point['batch']} | {point['concurrency']} | {before['rps']:,.0f} | "
            f"{after['rps']:,.0f} | {ratio['rps']:.3f} | {before['p99_us'] / 1e3:.2f} | "
            f"{after['p99_us'] / 1e3:.2f} | {ratio['p99_us']:.2f} |"
        )
    return "\n".join(lines)


def baseline_verdicts(results: dict[str, Any]) -> list[str]:
    """--baseline: one line per point, whether after's requests/s is within
    BASELINE_TOLERANCE of before's and at least GOALS' multiple of MLflow's."""
    lines = []
    for point in results["load"]:
        after = point["ours"]["rps"]
        change, over_mlflow = point["after_before"]["rps"] - 1, after / point["mlflow"]["rps"]
        ok = change >= -BASELINE_TOLERANCE and over_mlflow >= GOALS["rps_ratio"]
        lines.append(
            f"- {point['batch']} row(s) per request, concurrency {point['concurrency']}: "
            f"requests/s {change:+.1%} against before (goal >= {-BASELINE_TOLERANCE:.0%}), "
            f"{over_mlflow:.1f}x MLflow's (goal >= {GOALS['rps_ratio']:g}x): "
            + ("met" if ok else "**MISSED**")
        )
    return lines


def verdicts(results: dict[str, Any]) -> list[str]:
    """--table: one line per point, saying whether both goals (GOALS) are met there."""
    lines = []
    for point in results["load"]:
        ours, theirs = point["ours"], point["mlflow"]
        rps, p99 = ours["rps"] / theirs["rps"], ours["p99_us"] / theirs["p99_us"]
        ok = rps >= GOALS["rps_ratio"] and p99 <= GOALS["p99_ratio"]
        lines.append(
            f"- {point['batch']} record(s) per request, concurrency {point['concurrency']}: "
            f"requests/s {rps:.1f}x MLflow's (goal >= {GOALS['rps_ratio']:g}x), p99 {p99:.2f} "
            f"of MLflow's (goal <= {GOALS['p99_ratio']:.2f}): " + ("met" if ok else "**MISSED**")
        )
    return lines


def measure(subject: Subject, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Both servers up side by side: the same answers, the load points, the in-process
    figures and the soak run."""
    script = scratch / "post.lua"
    script.write_text(WRK_SCRIPT)
    bodies: dict[str, dict[int, Path]] = {"ours": {}, "mlflow": {}}
    for name, per_batch in (("ours", subject.ours), ("mlflow", subject.mlflow)):
        for batch, body in per_batch.items():
            bodies[name][batch] = scratch / f"{name}{batch}.json"
            bodies[name][batch].write_bytes(body)

    ours_port, mlflow_port = free_port(), free_port()
    ours_url = f"http://127.0.0.1:{ours_port}"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    ours_cmd = [sys.executable, "-m", "mlpipeline.serving"]
    extra = {}
    if args.pythonpath:
        extra["PYTHONPATH"] = os.pathsep.join(
            filter(None, [args.pythonpath, os.environ.get("PYTHONPATH")])
        )
    ours_env = {"MODEL_PATH": str(subject.onnx), "PORT": str(ours_port), "WORKERS": "1", **extra}
    model_uri = f"models:/{subject.model_name}/{subject.version}"
    mlflow_cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(mlflow_port),
        "-w",
        "1",
    ]
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "mlflow_model": model_uri,
        "records": subject.records,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "load_average_before": os.getloadavg(),
        "pythonpath": args.pythonpath,
        "load": [],
    }
    mlflow_env = {"MLFLOW_TRACKING_URI": subject.tracking_uri, **extra}
    with contextlib.ExitStack() as stack:
        ours_proc = stack.enter_context(server(ours_cmd, ours_env, f"{ours_url}/ready"))
        stack.enter_context(server(mlflow_cmd, mlflow_env, f"{mlflow_url}/ping"))
        targets = {"ours": f"{ours_url}/predict", "mlflow": f"{mlflow_url}/invocations"}
        if args.baseline:
            src = baseline_tree(args.baseline, scratch / "baseline")
            port = free_port()
            path = os.pathsep.join(filter(None, [str(src), extra.get("PYTHONPATH")]))
            env = {**ours_env, "PORT": str(port), "PYTHONPATH": path}
            stack.enter_context(server(ours_cmd, env, f"http://127.0.0.1:{port}/ready"))
            targets["baseline"] = f"http://127.0.0.1:{port}/predict"
            bodies["baseline"] = bodies["ours"]
            results["baseline"] = args.baseline
            targets["mlflow"] = targets.pop("mlflow")  # before and after run back to back
        # same answers first: the comparison is only fair if both compute the same thing
        headers = {"content-type": "application/json"}
        answers = {
            name: httpx.post(url, content=bodies[name][64].read_bytes(), headers=headers)
            for name, url in targets.items()
        }
        for name, answer in answers.items():
            if answer.status_code != 200:
                sys.exit(f"error: {name} answered {answer.status_code}: {answer.text[:2000]}")
        a = probabilities(answers["ours"].json())
        # MLflow flattens a table model's (rows, classes) output to one list of numbers
        b = probabilities(answers["mlflow"].json()).reshape(a.shape)
        results["answers_max_abs_diff"] = float(np.abs(a - b).max())
        if "baseline" in answers:
            c = probabilities(answers["baseline"].json())
            if not np.array_equal(a.astype(np.float32), c.astype(np.float32)):
                sys.exit(f"error: --baseline {args.baseline} answers differently from now")
        warm_s = min(2, args.duration)  # no longer than a measured run
        for name, url in targets.items():  # warm-up
            wrk(url, bodies[name][1], script, 16, warm_s)
            wrk(url, bodies[name][64], script, 16, warm_s)
        runs: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
        for index in range(args.rounds):
            # alternate, so drift hits all alike; every other round in reverse order, so that
            # a steady drift favours none of them
            order = list(targets)[:: -1 if index % 2 else 1]
            for batch in BATCHES:
                for concurrency in CONCURRENCY:
                    for name in order:
                        url = targets[name]
                        run = wrk(url, bodies[name][batch], script, concurrency, args.duration)
                        runs.setdefault((batch, concurrency, name), []).append(run)
                        print(f"{name:6} rows {batch:2} c {concurrency:2}: {run}", flush=True)
        for batch in BATCHES:
            for concurrency in CONCURRENCY:
                point: dict[str, Any] = {"batch": batch, "concurrency": concurrency}
                for name in targets:
                    point[name] = median_run(runs[(batch, concurrency, name)])
                if "baseline" in targets:
                    point["after_before"] = paired_ratios(
                        runs[(batch, concurrency, "ours")], runs[(batch, concurrency, "baseline")]
                    )
                results["load"].append(point)

        ort_times = in_process(subject, repeats=100 if args.smoke else 5000)
        results["overhead"] = {
            str(batch): {
                "in_process_ort_p50_us": ort_times[batch]["p50_us"],
                "http_p50_us": next(
                    p["ours"]["p50_us"]
                    for p in results["load"]
                    if p["batch"] == batch and p["concurrency"] == 1
                ),
            }
            for batch in BATCHES
        }

        # settle allocations first
        wrk(targets["ours"], bodies["ours"][1], script, 64, min(3, args.duration))
        before = rss_mb(ours_proc.pid)
        soaked = soak(targets["ours"], subject.ours[1], args.soak, 64)
        after = rss_mb(ours_proc.pid)
        results["soak"] = {
            "requests": soaked["requests"],
            "errors": soaked["errors"],
            "rss_before_mb": before,
            "rss_after_mb": after,
            "rss_growth_pct": 100 * (after - before) / before,
        }
    results["load_average_after"] = os.getloadavg()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The section's markdown."""
    what = (
        f"a table model (stages ingest to register on a synthetic table of {args.rows:,} rows, "
        "bench/synthetic.py: 50 columns, 5 classes; tabular defaults, one epoch), requests of "
        'named records: `{"records": [...]}` to this service, the same rows as '
        '`{"dataframe_records": [...]}` to MLflow'
        if results["records"]
        else "the repository's image model, `inputs` to both"
    )
    lines = [
        f"{stamp()} Load average (1/5/15 min) before {results['load_average_before']}, after "
        f"{results['load_average_after']}. Model: {results['mlflow_model']}, {what}; both "
        f"answer the same (largest difference in probabilities "
        f"{results['answers_max_abs_diff']:.1e}); each point the median of {args.rounds} "
        f"alternating rounds of wrk, {args.duration:g} s each.",
        "",
        table(results),
        "",
    ]
    if results["records"]:
        lines += [*verdicts(results), ""]
    if "baseline" in results:
        lines += [
            f"Before and after: this service as of `{results['baseline']}` (before) and as "
            "now (after), the same model, in the same alternating rounds as above (the two "
            "back to back, in either order); the ratios are the medians of the per-round "
            "ratios:",
            "",
            baseline_table(results),
            "",
            *baseline_verdicts(results),
            "",
        ]
    for batch, row in results["overhead"].items():
        lines.append(
            f"- {batch} row(s): in-process ORT p50 {row['in_process_ort_p50_us']:.0f} µs, "
            f"HTTP end-to-end p50 {row['http_p50_us']:.0f} µs at concurrency 1"
        )
    s = results["soak"]
    lines.append(
        f"- soak: {s['requests']} requests at concurrency 64, {s['errors']} errors, RSS "
        f"{s['rss_before_mb']:.1f} → {s['rss_after_mb']:.1f} MB ({s['rss_growth_pct']:+.1f} %)"
    )
    return "\n".join(lines)


def image_model(scratch: Path) -> Path:
    """The folder of the model --image-file serves: the repository's models/ when its card
    takes image files, else a stand-in exported under `scratch` (model.onnx, its card and its
    drift profile, as the pipeline writes them)."""
    card = ROOT / "models/model_card.json"
    if card.is_file() and json.loads(card.read_text())["input"].get("kind") == "image":
        return ROOT / "models"
    import timm
    import torch

    from mlpipeline.imaging import ImageShape, decode
    from mlpipeline.serving import profile
    from mlpipeline.stages.export import OUTPUT, to_onnx

    class UInt8Input(torch.nn.Module):
        """uint8 pixels in, cast and normalised inside, as the pipeline's image networks."""

        def __init__(self) -> None:
            super().__init__()
            self.net = timm.create_model("resnet18", pretrained=False, num_classes=10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x.to(torch.float32) - 120.0) / 60.0)

    torch.manual_seed(0)
    out = scratch / "image-model"
    out.mkdir()
    side, classes = IMAGE_SIDE, [str(c) for c in range(10)]
    example = np.zeros((1, 3, side, side), np.uint8)
    to_onnx(UInt8Input().eval(), example, out / "model.onnx", opset=17, input_name="image")
    image = {"channels": 3, "height": side, "width": side, "resize": "crop"}
    card = {
        "name": "bench-image",
        "version": "bench",
        "input": {"kind": "image", "name": "image", "shape": [None, 3, side, side], "image": image},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": [None, 10]},
        "classes": classes,
    }
    (out / "model_card.json").write_text(json.dumps(card))
    shape = ImageShape(3, side, side)
    x = np.stack([decode(jpeg_file(seed), shape) for seed in range(8)])
    session = load_model(Settings(model_path=out / "model.onnx"))
    outputs = session.predict({"image": x})
    reference = profile.Profile(
        input="image",
        rows=len(x),
        columns=profile.image_columns(x, bins=5),
        prediction=profile.class_prediction(classes, outputs),
    )
    (out / "profile.json").write_text(reference.model_dump_json(exclude_none=True))
    return out


def jpeg_file(seed: int, side: int = IMAGE_SIDE) -> bytes:
    """A side x side RGB JPEG (quality 90) of a smooth gradient with noise, photo-like in size."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, side)
    pixels = np.stack(
        [
            ramp[None, :] + 0 * ramp[:, None],
            ramp[:, None] + 0 * ramp[None, :],
            np.full((side, side), 90.0),
        ],
        axis=-1,
    )
    pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def multipart(name: str, data: bytes, boundary: str = "benchboundary") -> tuple[bytes, str]:
    """A multipart/form-data body holding one field `file`, as curl -F file=@name sends it,
    and its Content-Type."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def in_process_image(model: Model, settings: Settings, jpeg: bytes, repeats: int) -> float:
    """The median time (µs) of the service's own decode of `jpeg` and its ONNX Runtime call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(model.card.input.parse(jpeg, "image/jpeg", settings))
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def measure_image(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """--image-file: alternating rounds of the in-process call and wrk at concurrency 1 on the
    same JPEG; the same answer from both first."""
    models = image_model(scratch)
    jpeg = jpeg_file(1234)
    body, content_type = multipart("cat.jpg", jpeg)
    body_path, script = scratch / "image.multipart", scratch / "post.lua"
    body_path.write_bytes(body)
    script.write_text(WRK_SCRIPT)
    settings = Settings(model_path=models / "model.onnx")
    model = load_model(settings)
    expected = model.predict(model.card.input.parse(jpeg, "image/jpeg", settings))
    port = free_port()
    env = {"MODEL_PATH": str(models / "model.onnx"), "PORT": str(port), "WORKERS": "1"}
    url = f"http://127.0.0.1:{port}"
    rounds = []
    load_before = os.getloadavg()
    with server([sys.executable, "-m", "mlpipeline.serving"], env, f"{url}/ready"):
        answer = httpx.post(
            f"{url}/predict", content=body, headers={"content-type": content_type}, timeout=30
        )
        answer.raise_for_status()
        diff = float(np.abs(probabilities(answer.json()) - expected).max())
        for _ in range(args.rounds):
            in_us = in_process_image(model, settings, jpeg, 20 if args.smoke else 200)
            run = wrk(f"{url}/predict", body_path, script, 1, args.duration, content_type)
            if run["errors"]:
                sys.exit(f"error: {run['errors']} failed requests to {url}/predict")
            rounds.append(
                {
                    "in_process_p50_us": in_us,
                    "http_p50_us": run["p50_us"],
                    "http_rps": run["rps"],
                    "ratio": run["p50_us"] / in_us,
                }
            )
    return {
        "model": str(models.relative_to(ROOT)) if models.is_relative_to(ROOT) else "stand-in",
        "input": model.card.input.example_shape,
        "jpeg_bytes": len(jpeg),
        "answers_max_abs_diff": diff,
        "load_average_before": [round(v, 1) for v in load_before],
        "load_average_after": [round(v, 1) for v in os.getloadavg()],
        "rounds": rounds,
        "ratio": statistics.median(r["ratio"] for r in rounds),
    }


def image_report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """--image-file's section."""
    what = (
        f"the repository's image model ({results['model']})"
        if results["model"] != "stand-in"
        else "a stand-in exported as the pipeline exports an image model (timm resnet18, random "
        "weights, 10 classes, uint8 224x224 RGB in, normalised inside)"
    )
    middle = lambda key: statistics.median(r[key] for r in results["rounds"])  # noqa: E731
    verdict = "met" if results["ratio"] <= IMAGE_GOAL else "NOT met"
    return "\n".join(
        [
            f"{stamp()} Load average (1/5/15 min) before {results['load_average_before']}, after "
            f"{results['load_average_after']}. Model: {what}, input {list(results['input'])}. One "
            f"{IMAGE_SIDE}x{IMAGE_SIDE} JPEG ({results['jpeg_bytes']:,} bytes) per request as a "
            "multipart field `file` (curl -F file=@cat.jpg), concurrency 1, one worker; HTTP and "
            "in-process answers agree (largest difference in probabilities "
            f"{results['answers_max_abs_diff']:.1e}); medians of {args.rounds} alternating rounds "
            f"(wrk {args.duration:g} s each; in-process: the service's decode and ONNX Runtime "
            "call, timed in this process).",
            "",
            "| | p50 latency |",
            "| --- | --- |",
            f"| in-process decode + ONNX Runtime | {middle('in_process_p50_us') / 1000:.2f} ms |",
            f"| HTTP end to end (wrk) | {middle('http_p50_us') / 1000:.2f} ms |",
            "",
            f"- HTTP over in-process: {results['ratio']:.2f}x (median of the per-round ratios); "
            f"goal at most {IMAGE_GOAL:g}x: {verdict}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # wrk counts whole seconds
    parser.add_argument("--duration", type=int, default=5, help="seconds per load point")
    parser.add_argument("--rounds", type=int, default=3, help="runs per point (medians shown)")
    parser.add_argument("--soak", type=int, default=10_000, help="requests in the soak run")
    parser.add_argument("--table", action="store_true", help="a table model, named records")
    parser.add_argument("--rows", type=int, default=20_000, help="--table: the table's rows")
    parser.add_argument(
        "--image-file", action="store_true", help="an image model, one JPEG file per request"
    )
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument(
        "--pythonpath",
        help="prepend this to both servers' PYTHONPATH (e.g. a directory holding httptools "
        "and uvloop, which uvicorn then uses for both)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve the model with this service as of git revision REV, alternating "
        "with the others, and report after against before",
    )
    args = smoke.parse_args(parser)
    if args.smoke:
        args.duration, args.rounds, args.soak, args.rows = 1, 1, 200, 2_000
    if not shutil.which("wrk"):
        sys.exit("error: wrk not found: apt-get install wrk")
    if args.image_file:
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            results = measure_image(args, Path(tmp))
        title = "Serving an image file: HTTP against the in-process decode and ONNX Runtime"
        write_section("serving-image", title, image_report(results, args))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        scratch = Path(tmp)
        subject = table_subject(scratch / "table", args.rows) if args.table else image_subject()
        subject.version = mlflow_version(
            subject.tracking_uri, subject.model_name, md5_file(subject.onnx)
        )
        results = measure(subject, args, scratch)
    text = report(results, args)
    if args.table:
        title = "Serving named records: a table model against `mlflow models serve`"
        write_section("serving-records", title, text)
    else:
        title = "Serving: throughput and latency against `mlflow models serve`"
        write_section("serving", title, text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
