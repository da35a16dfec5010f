"""The team stack of docker-compose.yml (MLflow tracking server and model server): build it,
start it, check it, remove it.

    python -m mlpipeline.ops.stack smoke [--monitoring]     (or: make stack-smoke)

Runs Compose (`docker compose`, else `docker-compose`) under its own project name on free ports.
Compose reads its files as usual: docker-compose.yml, or the files COMPOSE_FILE names. Waits
until both services report healthy, then checks the model server (/ready, one /predict row
against the export stage's reference output) and the tracking server (/health; a run logged by
a separate process through MLFLOW_TRACKING_URI, its metric, param and artifact read back), and
reports build time, image sizes and time to healthy. With --monitoring it also starts the
Compose file's Prometheus (profile "monitoring", without Grafana), waits until it is healthy too,
and checks through its HTTP API that it scrapes the model service (/api/v1/targets: job model
up) and has loaded the groups of monitoring/prometheus/rules.yml (/api/v1/rules). The stack and
its volumes are removed at the end, whatever happened. Expected failures (no daemon, no Compose,
no model) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import numpy as np
import yaml

from mlpipeline.artifacts import md5_file
from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.git import revision, source_url
from mlpipeline.ops import smoke as checks
from mlpipeline.ops.docker import (
    MB,
    DockerSettings,
    connect,
    ensure_base_image,
    free_port,
    log_tail,
    serve_image_tag,
)
from mlpipeline.ops.wait import wait_until

SERVICES = ("mlflow", "model")
MONITORING = ("prometheus",)  # of the "monitoring" profile: Grafana needs no check of its own
PROFILE = "monitoring"
RULES = Path("monitoring/prometheus/rules.yml")
SCRAPE_JOB = "model"
HEALTHY_TIMEOUT_S = 300.0
# the model's target is scraped every 15 s (prometheus.yml): a few intervals to see it up
SCRAPED_TIMEOUT_S = 90.0
COMMAND_TIMEOUT_S = 600.0

# Run in a separate process with only MLFLOW_TRACKING_URI pointing at the server, as the
# pipeline's stages are (`MLFLOW_TRACKING_URI=... dvc repro`); prints what it read back as JSON.
CLIENT_CHECK = """
import json, tempfile, mlflow
mlflow.set_experiment("stack-smoke")
with mlflow.start_run() as run:
    mlflow.log_param("check", "stack-smoke")
    mlflow.log_metric("answer", 0.42)
    mlflow.log_text("logged through the tracking server", "smoke.txt")
client = mlflow.MlflowClient()
back = client.get_run(run.info.run_id)
with tempfile.TemporaryDirectory() as tmp:
    path = client.download_artifacts(run.info.run_id, "smoke.txt", tmp)
    text = open(path, encoding="utf-8").read()
print(json.dumps({"run_id": back.info.run_id, "status": back.info.status,
                  "metrics": back.data.metrics, "params": back.data.params,
                  "artifact_uri": back.info.artifact_uri, "text": text}))
"""


@dataclass(frozen=True)
class StackReport:
    """What `smoke` measured and checked."""

    compose: str
    images: dict[str, str]
    image_mb: dict[str, float]
    build_s: float
    up_s: float
    healthy_s: dict[str, float]
    max_abs_diff: float
    run_id: str
    artifact_uri: str
    urls: dict[str, str] = field(default_factory=dict)
    # with monitoring: the model's scrape target as Prometheus reports it, and the rule groups
    # it loaded (name: number of rules)
    scrape: dict[str, str] = field(default_factory=dict)
    rule_groups: dict[str, int] = field(default_factory=dict)


def compose_command() -> list[str]:
    """`docker compose` (v2) where the plugin answers, else `docker-compose` (v1.29)."""
    if shutil.which("docker"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            probe = ["docker", "compose", "version"]
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise PipelineError(
        "neither `docker compose` nor `docker-compose` is installed: install Docker's compose "
        "plugin, or `apt-get install docker-compose`"
    )


@dataclass(frozen=True)
class Compose:
    """One Compose project: the command with its -p and -f options, its directory and env."""

    command: list[str]
    root: Path
    env: dict[str, str]

    def __call__(self, *args: str, quiet: bool = True) -> str:
        """Run a Compose subcommand; PipelineError with the end of its output if it fails.
        Output is returned when `quiet`, else it goes to the terminal."""
        cmd = [*self.command, *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.root,
                env=self.env,
                stdout=subprocess.PIPE if quiet else None,
                stderr=subprocess.STDOUT if quiet else None,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise PipelineError(f"`{' '.join(cmd)}` took over {COMMAND_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout or "").strip().splitlines()[-3:])
            raise PipelineError(f"`{' '.join(cmd)}` exited {proc.returncode}: {tail}")
        return proc.stdout or ""


def wait_healthy(
    client: docker.DockerClient,
    compose: Compose,
    started: float,
    services: tuple[str, ...] = SERVICES,
) -> dict[str, float]:
    """Poll each of `services`' Docker health until all are healthy; seconds from `started` to
    each service's healthy state. PipelineError with its log tail if one fails or exits."""
    ids = {s: compose("ps", "-q", s).strip() for s in services}
    for service, cid in ids.items():
        if not cid:
            raise PipelineError(f"service {service} has no container after `up`")
    containers = {s: client.containers.get(cid) for s, cid in ids.items()}
    healthy: dict[str, float] = {}

    def all_healthy() -> dict[str, float] | None:
        for service, container in containers.items():
            if service in healthy:
                continue
            container.reload()
            state = container.attrs["State"]
            status = (state.get("Health") or {}).get("Status", "none")
            if status == "healthy":
                healthy[service] = time.monotonic() - started
            elif (
                status in ("unhealthy", "none")
                or state["Status"] in ("exited", "dead", "restarting")
                or container.attrs.get("RestartCount", 0) > 0
            ):
                raise PipelineError(
                    f"service {service} is {state['Status']}, health {status}: "
                    f"{log_tail(container)}"
                )
        return healthy if len(healthy) == len(containers) else None

    waiting = ", ".join(services)
    return wait_until(all_healthy, HEALTHY_TIMEOUT_S, f"{waiting} not all healthy", 0.5)


def check_model(url: str, x: Any, reference: np.ndarray) -> float:
    """/ready answers, and /predict on the first row agrees with the reference output."""
    with httpx.Client(base_url=url, timeout=10) as http:
        ready = http.get("/ready")
        if ready.status_code != 200:
            raise PipelineError(f"model server /ready answered {ready.status_code}")
        labels = [str(c) for c in http.get("/metadata").json().get("classes") or []]
    probs, classes = checks.predict_all(url, x[:1], 1)
    return checks.compare(probs, classes, reference[:1], labels)


def check_tracking(url: str) -> dict[str, object]:
    """/health answers OK, and a run logged through MLFLOW_TRACKING_URI reads back whole,
    its artifact stored and served by the server (an mlflow-artifacts: URI)."""
    try:
        health = httpx.get(f"{url}/health", timeout=10)
    except httpx.TransportError as err:
        raise PipelineError(f"tracking server {url}/health: {err}") from None
    if health.status_code != 200 or health.text.strip() != "OK":
        raise PipelineError(f"tracking server /health answered {health.status_code}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT_CHECK],
        env={**env, "MLFLOW_TRACKING_URI": url},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise PipelineError(f"logging a run to {url} failed: {proc.stderr.strip()[-300:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {
        "status": "FINISHED",
        "metrics": {"answer": 0.42},
        "params": {"check": "stack-smoke"},
        "text": "logged through the tracking server",
    }
    wrong = {k: got[k] for k in expected if got[k] != expected[k]}
    if wrong or not got["artifact_uri"].startswith("mlflow-artifacts:"):
        raise PipelineError(f"run read back from {url} differs: {wrong or got['artifact_uri']}")
    return got


def prometheus_api(http: httpx.Client, path: str) -> dict[str, Any]:
    """The `data` of a Prometheus HTTP API answer; PipelineError if it does not answer
    success."""
    try:
        answer = http.get(path)
        body = answer.json()
    except (httpx.TransportError, ValueError) as err:
        raise PipelineError(f"Prometheus {http.base_url}{path}: {err}") from None
    if answer.status_code != 200 or body.get("status") != "success":
        raise PipelineError(f"Prometheus {path} answered {answer.status_code}: {answer.text[:200]}")
    return body["data"]


def expected_rule_groups(rules: Path) -> dict[str, int]:
    """The rule groups of a Prometheus rule file: name, number of rules."""
    if not rules.is_file():
        raise PipelineError(f"{rules} not found: run `make rules` (it writes the rule file)")
    spec = yaml.safe_load(rules.read_text(encoding="utf-8")) or {}
    return {g["name"]: len(g.get("rules") or []) for g in spec.get("groups") or []}


def check_prometheus(url: str, rules: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Prometheus scrapes the model service (its target of job `model` is up, waiting a few
    scrape intervals for that) and has loaded every group of `rules` with all its rules.
    Returns the target (scrape URL, health, last scrape) and the loaded groups."""
    expected = expected_rule_groups(rules)
    last: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=10) as http:

        def model_up() -> dict[str, Any] | None:
            targets = prometheus_api(http, "/api/v1/targets?state=active")["activeTargets"]
            jobs = [t for t in targets if t.get("labels", {}).get("job") == SCRAPE_JOB]
            last.update(jobs[0] if jobs else {})
            return next((t for t in jobs if t.get("health") == "up"), None)

        try:
            target = wait_until(model_up, SCRAPED_TIMEOUT_S, f"job {SCRAPE_JOB} not up", 1.0)
        except PipelineError as err:
            seen = f"health {last.get('health')}, {last.get('lastError') or 'no error'}"
            raise PipelineError(
                f"Prometheus {url}: {err} ({seen if last else 'no target'})"
            ) from None
        groups = prometheus_api(http, "/api/v1/rules")["groups"]
    loaded = {g["name"]: len(g.get("rules") or []) for g in groups}
    if any(loaded.get(name) != count for name, count in expected.items()):
        raise PipelineError(f"Prometheus {url} loaded rule groups {loaded}, {rules} has {expected}")
    scrape = {k: str(target.get(k, "")) for k in ("scrapeUrl", "health", "lastScrape")}
    return scrape, loaded


@contextlib.contextmanager
def stack_up(compose: Compose, services: tuple[str, ...] = ()) -> Iterator[float]:
    """`up -d` (of `services`, default all but the profiled ones); yields the time it
    started; `down -v` on leaving, whatever happened."""
    started = time.monotonic()
    try:
        compose("up", "-d", *services)
        yield started
    finally:
        with contextlib.suppress(PipelineError):
            compose("down", "-v", "--remove-orphans")


def smoke(
    client: docker.DockerClient,
    root: Path,
    x: Any,  # the test rows: records of a table, or an array
    reference: np.ndarray,
    base_image: str,
    project: str = "mlpipeline-stack-smoke",
    images: dict[str, str] | None = None,
    quiet: bool = False,
    monitoring: bool = False,
    ports: dict[str, int] | None = None,
) -> StackReport:
    """Build the stack in `root`, start it on free ports, check both services, remove it.
    `images`: tags for the services (MLFLOW_IMAGE, MODEL_IMAGE; default the Compose file's).
    `monitoring`: start and check Prometheus too (profile "monitoring", not Grafana).
    `ports`: host ports of some services (default: free ones)."""
    model = root / "models" / "model.onnx"
    for needed in (model, root / "models" / "profile.json"):
        if not needed.is_file():
            raise PipelineError(f"{needed} not found: run `dvc repro` first (it exports the model)")
    command = compose_command()
    ensure_base_image(client, base_image)
    services = (*SERVICES, *MONITORING) if monitoring else SERVICES
    ports = {s: free_port() for s in services} | (ports or {})
    env = {
        **os.environ,
        "BASE_IMAGE": base_image,
        "MLFLOW_PORT": str(ports["mlflow"]),
        "MODEL_PORT": str(ports["model"]),
        **({"PROMETHEUS_PORT": str(ports["prometheus"])} if monitoring else {}),
        "GIT_COMMIT": revision(root),
        "SOURCE_URL": source_url(root),
        "MODEL_MD5": md5_file(model),
        **{f"{s.upper()}_IMAGE": tag for s, tag in (images or {}).items()},
    }
    if not env.get("COMPOSE_FILE") and not (root / "docker-compose.yml").is_file():
        raise PipelineError(f"{root / 'docker-compose.yml'} not found")
    profile = ["--profile", PROFILE] if monitoring else []
    compose = Compose([*command, "-p", project, *profile], root, env)
    began = time.monotonic()
    compose("build", quiet=quiet)
    build_s = time.monotonic() - began
    urls = {s: f"http://127.0.0.1:{port}" for s, port in ports.items()}
    scrape: dict[str, str] = {}
    groups: dict[str, int] = {}
    # naming the services keeps the profile's other ones (Grafana) stopped
    with stack_up(compose, services if monitoring else ()) as started:
        up_s = time.monotonic() - started
        healthy = wait_healthy(client, compose, started, services)
        diff = check_model(urls["model"], x, reference)
        run = check_tracking(urls["mlflow"])
        if monitoring:
            scrape, groups = check_prometheus(urls["prometheus"], root / RULES)
        built = {s: client.containers.get(compose("ps", "-q", s).strip()).image for s in services}
    return StackReport(
        compose=" ".join(command),
        images={s: (i.tags or [i.short_id])[0] for s, i in built.items()},
        image_mb={s: i.attrs["Size"] / MB for s, i in built.items()},
        build_s=build_s,
        up_s=up_s,
        healthy_s=healthy,
        max_abs_diff=diff,
        run_id=str(run["run_id"]),
        artifact_uri=str(run["artifact_uri"]),
        urls=urls,
        scrape=scrape,
        rule_groups=groups,
    )


def describe(report: StackReport) -> str:
    """The report as a few lines of text."""
    services = list(report.images)  # in the order of SERVICES, then MONITORING
    sizes = ", ".join(f"{report.images[s]} {report.image_mb[s]:.0f} MB" for s in services)
    healthy = ", ".join(f"{s} {report.healthy_s[s]:.1f} s" for s in services)
    groups = ", ".join(f"{name} ({n} rules)" for name, n in report.rule_groups.items())
    prometheus = (
        [
            f"Prometheus {report.urls['prometheus']}: target {report.scrape['scrapeUrl']} of job "
            f"{SCRAPE_JOB} {report.scrape['health']}; rule groups loaded: {groups}"
        ]
        if report.scrape
        else []
    )
    return "\n".join(
        [
            f"stack via {report.compose}: {sizes}",
            f"build {report.build_s:.1f} s; `up -d` {report.up_s:.1f} s; healthy after "
            f"{healthy} (from `up`)",
            f"model server {report.urls['model']}: /ready ok, /predict on one row max |Δp| "
            f"{report.max_abs_diff:.1e} vs reference",
            f"tracking server {report.urls['mlflow']}: /health ok, run {report.run_id} logged "
            f"through MLFLOW_TRACKING_URI and read back, artifacts at {report.artifact_uri}",
            *prometheus,
            "stack stopped and removed (down -v)",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: `smoke`; PipelineError becomes one line and exit status 1."""
    settings = DockerSettings()
    parser = argparse.ArgumentParser(
        prog="python -m mlpipeline.ops.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("smoke", help="build, start, check and remove the stack")
    check.add_argument(
        "--base-image",
        default=settings.base_image,
        help="base of both images (env BASE_IMAGE; default: the Dockerfile's)",
    )
    check.add_argument("--root", type=Path, default=Path("."), help="repository root")
    check.add_argument("--quiet", action="store_true", help="no build log")
    check.add_argument(
        "--monitoring",
        action="store_true",
        help="start Prometheus too and check that it scrapes the model and loaded the rules",
    )
    checks.add_check_inputs(check)
    args = parser.parse_args(argv)
    with exit_on_error("interrupted; the stack was removed"):
        x, reference = checks.load_check_inputs(args.test, args.reference, args.images)
        base = args.base_image or settings.base(args.root)
        # the model service's image is the project's (unless MODEL_IMAGE names another)
        images = (
            None
            if os.environ.get("MODEL_IMAGE")
            else {"model": serve_image_tag(settings, args.root / "params.yaml")}
        )
        report = smoke(
            connect(),
            args.root,
            x,
            reference,
            base,
            images=images,
            quiet=args.quiet,
            monitoring=args.monitoring,
        )
        print(describe(report))
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
