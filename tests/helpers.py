"""Helpers the tests share: running commands with the venv first on PATH, temporary copies of
the repository, conf/ edits, and a tiny exported model for the serving tests."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gzip
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mlpipeline.ops.docker import free_port

__all__ = ["free_port"]  # the tests take it from here

ROOT = Path(__file__).resolve().parents[1]
# stage commands say `python`/`dvc`: make them the ones of the running venv
BIN = str(Path(sys.executable).parent)
# the Docker tests fail, rather than skip, without a daemon (.ci/run sets it)
REQUIRED = os.environ.get("MLPIPELINE_REQUIRE_DOCKER") == "1"
# longer than any command of the suite takes here, far shorter than a DDP rendezvous timeout
RUN_TIMEOUT_S = 600
# the stages of dvc.yaml, in its order
STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])

# The digits demo's entries in conf/config.yaml's defaults list. The kit's own tests run on the
# demo whatever data a generated project's conf names: they test the machinery, and the
# project's own data gets its run from `make pipeline`.
DEMO_DEFAULTS = {"data": "digits", "task": "classification", "model": "cnn"}


def demo_config(text: str) -> str:
    """conf/config.yaml's text pointed at the digits demo: its defaults, no data settings in
    the body (a project's path and label), the project unnamed; every other line as it is, so
    that tests may edit the text as in the repository."""
    lines, skipping = [], False
    for line in text.splitlines(keepends=True):
        if skipping and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        skipping = line.startswith("data:")
        if skipping:
            continue
        if match := re.match(r"(\s*- )(\w+)(: )\S+", line):
            if match[2] in DEMO_DEFAULTS:
                line = f"{match[1]}{match[2]}{match[3]}{DEMO_DEFAULTS[match[2]]}\n"
        elif line.startswith("project:"):
            line = "project: null\n"
        lines.append(line)
    return "".join(lines)


def as_demo(conf: Path) -> Path:
    """Point `conf`/config.yaml at the digits demo, leaving it untouched where it already is
    (the repository itself); returns `conf`."""
    path = conf / "config.yaml"
    text = path.read_text(encoding="utf-8")
    if (demo := demo_config(text)) != text:
        path.write_text(demo, encoding="utf-8")
    return conf


def demo_conf_dir() -> Path:
    """conf/ where it composes the demo, else a copy of it pointed at the demo (a generated
    project's), removed at exit."""
    conf = ROOT / "conf"
    text = (conf / "config.yaml").read_text(encoding="utf-8")
    if demo_config(text) == text:
        return conf
    scratch = Path(tempfile.mkdtemp(prefix="demo-conf-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return as_demo(Path(shutil.copytree(conf, scratch / "conf")))


# what the kit's own tests compose: conf/ as the demo (ROOT / "conf" itself in this repository)
CONF = demo_conf_dir()


@functools.cache
def demo_params() -> Path:
    """params.yaml composed from CONF, in a temporary folder removed at exit: for the CLIs
    that read one (a new project has none before its first run)."""
    from mlpipeline.config import compose_config

    scratch = Path(tempfile.mkdtemp(prefix="demo-params-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    (scratch / "params.yaml").write_text(compose_config(CONF)[0], encoding="utf-8")
    return scratch / "params.yaml"


def stop(proc: subprocess.Popen) -> None:
    """End a server started with start_new_session=True, and its children (mlflow starts
    uvicorn and a job runner): SIGTERM to the group, SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # children that outlived the leader share its group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command with the venv first on PATH in its own process group; fail with its
    output when `check` and it fails, or when it is still running after RUN_TIMEOUT_S."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env |= {"PATH": f"{BIN}:{os.environ['PATH']}", **env}
    popen = subprocess.Popen(
        cmd, cwd=cwd, env=full_env, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = popen.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # a hung DDP peer holds the pipes open forever: end the whole process group
        stop(popen)
        out, err = popen.communicate()
        pytest.fail(f"{' '.join(cmd)} still running after {RUN_TIMEOUT_S} s:\n{out}\n{err}")
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, err)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for_server(
    proc: subprocess.Popen, url: str, timeout_s: float, log: Any = lambda: ""
) -> None:
    """Wait until GET `url` answers 200 (mlpipeline.ops.wait); fail the test with the server's
    log if it exits first or `timeout_s` passes."""
    from mlpipeline.errors import PipelineError
    from mlpipeline.ops.wait import answers, wait_until

    def up() -> bool | None:
        if proc.poll() is not None:
            raise PipelineError(f"server exited {proc.returncode}: {log()}")
        return answers(url)

    try:
        wait_until(up, timeout_s, f"{url} did not answer", interval_s=0.2)
    except PipelineError as err:
        pytest.fail(f"{err}\n{log()}")


def make_command(*args: str) -> list[str]:
    """`make <args>` with the running venv, never reinstalling it: `-o` takes its install stamp
    as up to date whatever the copy's file times (a reinstall would point the venv's editable
    install at the copy)."""
    stamps = [f"-o{sys.prefix}/{name}" for name in (".installed", ".installed-dev")]
    return ["make", *stamps, *args, f"VENV={sys.prefix}"]


def one_line_error(proc: subprocess.CompletedProcess, *parts: str, prefix: str = "error: ") -> str:
    """Assert that `proc` failed with exactly one error line (starting with `prefix`; DVC's
    own start with `ERROR: `) holding every part, and no traceback; return the line."""
    assert proc.returncode != 0, proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, proc.stderr
    assert all(p in errors[0] for p in parts), errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    return errors[0]


def copy_tracked_files(dest: Path, demo: bool = False) -> Path:
    """The git-tracked files of this repository (as they are in the working tree), committed
    in a fresh git repository; conf/ pointed at the digits demo if `demo`. A new project's
    params.yaml, which its first `make pipeline` composes, is composed first."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    if demo:
        as_demo(dest / "conf")
    if not (dest / "params.yaml").is_file():
        run(["python", "-m", "mlpipeline.stages.compose"], dest)
    run(["git", "init", "-q"], dest)
    commit_all(dest, "copy")
    return dest


def commit_all(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def set_in_conf(repo: Path, file: str, key: str, value: object) -> None:
    """Set `key` (dotted) in conf/<file> of `repo`."""
    path = repo / "conf" / file
    data = yaml.safe_load(path.read_text())
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def tiny(cfg: Any, base: Path) -> Any:
    """`cfg` with every path under `base` (raw data in base/raw) and a private MLflow store."""
    paths = cfg.paths.rebased(base).model_copy(update={"raw": base / "raw"})
    tracking = cfg.tracking.model_copy(update={"uri": f"sqlite:///{base}/mlflow.db"})
    return cfg.model_copy(update={"paths": paths, "tracking": tracking})


def tiny_params(base: Path, *overrides: str) -> tuple[Path, Any]:
    """Compose conf/ with two-epoch training and `overrides`, paths under `base`; write it to
    base/params.yaml for a stage's --params. Returns the file and the config."""
    from mlpipeline.config import compose_config, validate_config

    (base / "raw").mkdir(parents=True, exist_ok=True)
    cfg = tiny(compose_config(CONF, ["trainer.max_epochs=2", *overrides])[1], base)
    params = base / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.dump(), sort_keys=False), encoding="utf-8")
    return params, validate_config(yaml.safe_load(params.read_text()))


def stages_run(output: str) -> list[str]:
    """Names of the stages `dvc repro` actually ran, from its output."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


# DVC's own lines and the lines a stage may print beside its one: per epoch, per composed setting
QUIET_PREFIXES = (
    "Generating lock file", "Updating lock file", "Use `dvc push`", "epoch ", "compose: "
)  # fmt: skip


def assert_one_line_per_stage(proc: subprocess.CompletedProcess) -> None:
    """What a user reads of `dvc repro` (or `dvc exp run`): nothing on stderr (no warning, no
    library's info line), and each stage that ran printed one line, beside train's one per epoch
    and compose's one per setting it changed."""
    assert proc.stderr == "", proc.stderr
    lines = iter(proc.stdout.splitlines())
    for line in lines:
        if line.startswith("Running stage '"):
            next(lines)  # DVC's "> <command>"
            said = [s for s in itertools.takewhile(bool, lines) if not s.startswith(QUIET_PREFIXES)]
            assert len(said) == 1, f"{line}\n" + "\n".join(said)


# what `dvc status` says of a reproduced pipeline: the compose stage runs on every `dvc repro`
UP_TO_DATE = "compose:\n\talways changed\n"


def lock_outs(repo: Path) -> dict[str, str]:
    """md5 of every stage output recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}


# moto accepts any credentials; these keep real ones away from the fake endpoint
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def s3_env(tmp_path: Path) -> dict[str, str]:
    """Environment for DVC against the s3_server fixture: fake keys, no AWS config files."""
    return {
        **S3_KEYS,
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the s3_server fixture's endpoint."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    )


def copy_serving(root: Path) -> None:
    """The serving package into a build context at `root`, as the Dockerfile copies it."""
    shutil.copytree(
        ROOT / "kit/mlpipeline/serving",
        root / "kit/mlpipeline/serving",
        ignore=shutil.ignore_patterns("__pycache__"),
        dirs_exist_ok=True,
    )
    shutil.copy(ROOT / "kit/mlpipeline/imaging.py", root / "kit/mlpipeline/imaging.py")


# the tiny model the serving tests export, and the service's limits in those tests
ROW = [1, 8, 8]
MAX_BATCH = 8
MAX_BODY = 64 * 1024


def export_tiny_model(directory: Path, n_test: int = 50) -> Path:
    """Write model.onnx, model_card.json (the fields serving reads), x.npy (raw digit-like
    inputs), reference.npy (ONNX Runtime's probabilities on x) and profile.json (x and those
    predictions as the drift reference) into `directory`, with the export stage's own
    function and the profile's builders."""
    import onnxruntime as ort
    import torch

    from mlpipeline.models.modelfile import build_network
    from mlpipeline.serving import profile
    from mlpipeline.stages.export import INPUT, OUTPUT, to_onnx

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    spec = {
        "net": {"_target_": "myproject.models.nets.CNN", "channels": [4, 8], "hidden": 16},
        "in_shape": ROW,
        "num_classes": 10,
        "normalization": {"mean": [[[4.9]]], "std": [[[6.0]]]},
    }
    x = np.random.default_rng(0).integers(0, 17, size=(n_test, *ROW)).astype(np.float32)
    to_onnx(build_network(spec).eval(), x[:2], directory / "model.onnx", opset=17)
    card: dict[str, Any] = {
        "name": "tiny-test-model",
        "version": "0123456789ab",
        "format": "onnx",
        "input": {"kind": "tensor", "name": INPUT, "dtype": "float32", "shape": [None, *ROW]},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": [None, 10]},
        "classes": [str(c) for c in range(10)],
        "hashes": {"onnx": "0123456789abcdef"},
        "metrics": {"accuracy": 0.5},
    }
    (directory / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    session = ort.InferenceSession(str(directory / "model.onnx"))
    np.save(directory / "x.npy", x)
    outputs = session.run(None, {INPUT: x})[0]
    np.save(directory / "reference.npy", outputs)
    reference = profile.Profile(
        input="tensor",
        rows=len(x),
        columns=profile.image_columns(x, bins=5),
        prediction=profile.class_prediction(card["classes"], outputs),
    )
    (directory / "profile.json").write_text(
        reference.model_dump_json(exclude_none=True), encoding="utf-8"
    )
    return directory


# the tiny image model the serving tests export: RGB images resized to this, three classes
IMAGE_SIZE = (12, 16)  # height, width
IMAGE_CLASSES = ["cat", "dog", "fish"]


def image_file(
    seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB", fmt: str = "PNG"
) -> bytes:
    """A small image file of random pixels (`size` is width, height)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode, 1)
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def export_tiny_image_model(directory: Path, n_files: int = 12) -> Path:
    """Write an image model as the pipeline will (an ONNX model taking uint8 (batch, 3, H, W)
    that casts and normalises inside, a card whose `input` is of kind `image`), its drift
    profile, `files/` (PNG and JPEG images of other sizes and modes), and `reference.npy`:
    ONNX Runtime's probabilities on those files decoded by mlpipeline.imaging, as ingest
    decodes them."""
    import onnxruntime as ort
    import torch

    from mlpipeline.imaging import ImageShape, decode
    from mlpipeline.serving import profile
    from mlpipeline.stages.export import OUTPUT, to_onnx

    class UInt8Net(torch.nn.Module):
        """Cast, normalise, one convolution: the shape of the pipeline's image networks."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.head = torch.nn.Linear(4, len(IMAGE_CLASSES))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x.to(torch.float32) - 127.5) / 64.0
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    height, width = IMAGE_SIZE
    shape = ImageShape(3, height, width, "crop")
    example = np.zeros((2, 3, height, width), np.uint8)
    to_onnx(UInt8Net().eval(), example, directory / "model.onnx", opset=17, input_name="image")
    card: dict[str, Any] = {
        "name": "tiny-image-model",
        "version": "0123456789ab",
        "format": "onnx",
        "input": {
            "kind": "image",
            "name": "image",
            "dtype": "uint8",
            "shape": [None, 3, height, width],
            "image": {
                "channels": 3,
                "height": height,
                "width": width,
                "resize": "crop",
                "formats": [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"],
            },
            "note": "uint8 RGB (batch, 3, H, W); the shorter side resized to fit, centre cut",
        },
        "output": {"name": OUTPUT, "dtype": "float32", "shape": [None, len(IMAGE_CLASSES)]},
        "classes": IMAGE_CLASSES,
        "hashes": {"onnx": "0123456789abcdef"},
    }
    (directory / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    files = directory / "files"
    files.mkdir()
    kinds = [
        ("RGB", "PNG", "png"),
        ("L", "PNG", "png"),
        ("RGB", "JPEG", "jpg"),
        ("RGBA", "PNG", "png"),
    ]
    for i in range(n_files):
        mode, fmt, suffix = kinds[i % len(kinds)]
        size = (30 + 7 * i, 20 + 5 * (i % 3))
        (files / f"img{i:02d}.{suffix}").write_bytes(image_file(i, size, mode, fmt))
    x = np.stack([decode(path, shape) for path in sorted(files.iterdir())])
    session = ort.InferenceSession(str(directory / "model.onnx"))
    outputs = session.run(None, {"image": x})[0]
    np.save(directory / "reference.npy", outputs)
    reference = profile.Profile(
        input="image",
        rows=len(x),
        columns=profile.image_columns(x, bins=5),
        prediction=profile.class_prediction(card["classes"], outputs),
    )
    (directory / "profile.json").write_text(
        reference.model_dump_json(exclude_none=True), encoding="utf-8"
    )
    return directory


def bad_requests() -> list[tuple[str, bytes, str | None, int, str]]:
    """(id, body, content type, expected status, part of the expected message): every kind
    of request the service must refuse with a 4xx. Shared with the container tests."""
    row = np.zeros(ROW).tolist()
    good = json.dumps({"inputs": [row]})
    js = "application/json"

    def body(inputs: Any) -> bytes:
        return json.dumps({"inputs": inputs}).encode()

    def with_value(value: str) -> bytes:  # a literal token inside an otherwise good example
        return good.replace("0.0", value, 1).encode()

    return [
        ("malformed-json", b'{"inputs": [[', js, 400, "malformed JSON"),
        ("empty-body", b"", js, 400, "malformed JSON"),
        ("not-utf8", b'{"inputs": "\xff"}', js, 400, "malformed JSON"),
        ("utf16", good.encode("utf-16"), js, 400, "looks UTF-16-encoded"),
        (
            "gzip-unannounced",
            gzip.compress(good.encode(), mtime=0),
            js,
            400,
            "looks gzip-compressed",
        ),
        ("text-plain", good.encode(), "text/plain", 415, "Content-Type must be application/json"),
        ("form", b"inputs=1", "application/x-www-form-urlencoded", 415, "Content-Type"),
        ("no-content-type", good.encode(), None, 415, "missing"),
        ("not-an-object", body([row])[10:-1], js, 422, '{"inputs"'),
        ("mlflow-style-key", json.dumps({"instances": [row]}).encode(), js, 422, '{"inputs"'),
        ("extra-key", json.dumps({"inputs": [row], "x": 1}).encode(), js, 422, "unknown keys"),
        ("inputs-not-a-list", body(3), js, 422, "must be a list"),
        ("flat-features", body([[0.0] * 64]), js, 422, "shape [1, 8, 8] (64 numbers)"),
        ("feature-count", body([np.zeros([1, 8, 7]).tolist()]), js, 422, "got inputs of shape"),
        ("unbatched", body(row), js, 422, "got inputs of shape [1, 8, 8]"),
        ("ragged", body([row, row[0][:4]]), js, 422, "ragged"),
        (
            "nested-70-deep",
            ("[" * 70 + "1" + "]" * 70).join(['{"inputs": ', "}"]).encode(),
            js,
            422,
            "nested too deeply",
        ),
        (
            "nested-2000-deep",
            ("[" * 2000 + "]" * 2000).join(['{"inputs": ', "}"]).encode(),
            js,
            400,
            "depth limit",
        ),
        (
            "nested-2000-deep-nan",
            ("[" * 2000 + "NaN" + "]" * 2000).join(['{"inputs": ', "}"]).encode(),
            js,
            400,
            "depth limit",
        ),
        ("string", with_value('"1.5"'), js, 422, "must be numbers; found strings"),
        ("null", with_value("null"), js, 422, "must be numbers"),
        ("bool", with_value("true"), js, 422, "must be numbers; found true/false"),
        ("object", with_value('{"a": 1}'), js, 422, "must be numbers"),
        ("nan", with_value("NaN"), js, 422, "NaN is not allowed"),
        ("infinity", with_value("Infinity"), js, 422, "Infinity is not allowed"),
        ("minus-infinity", with_value("-Infinity"), js, 422, "-Infinity is not allowed"),
        ("overflow-double", with_value("1e999"), js, 422, "finite"),
        ("overflow-float32", with_value("3.5e38"), js, 422, "finite"),
        ("empty-batch", body([]), js, 422, "inputs is empty"),
        ("batch-over-limit", body([row] * (MAX_BATCH + 1)), js, 422, "over the limit of 8"),
        ("body-over-limit", body([row] * 200), js, 413, f"over the limit of {MAX_BODY} bytes"),
    ]


def host_network_compose_file(root: Path, model_port: int | None = None) -> Path:
    """docker-compose.yml of `root` on the host's network: no published ports, each service
    listening on the host port itself, builds on the host network too. Without `model_port`,
    without the services of the "monitoring" profile; with it, Prometheus stays (listening on
    PROMETHEUS_PORT, scraping the model at 127.0.0.1:`model_port` through a prometheus.yml
    written beside the committed one) and only Grafana goes."""
    spec = yaml.safe_load((root / "docker-compose.yml").read_text(encoding="utf-8"))
    port_vars = {"mlflow": ("MLFLOW_PORT", "5000"), "model": ("PORT", "8080")}
    host_vars = {"mlflow": "MLFLOW_PORT", "model": "MODEL_PORT"}
    # Grafana's official image no registry here serves, and no stand-in is built for it
    keep = {"prometheus"} if model_port is not None else set()
    spec["services"] = {
        n: s for n, s in spec["services"].items() if "profiles" not in s or n in keep
    }
    for name, service in spec["services"].items():
        service.pop("ports", None)
        service["network_mode"] = "host"
        if name == "prometheus":
            continue
        service["build"]["network"] = "host"
        variable, default = port_vars[name]
        service.setdefault("environment", {})[variable] = f"${{{host_vars[name]}:-{default}}}"
    if "prometheus" in spec["services"]:
        host_network_prometheus(root, spec["services"]["prometheus"], model_port)
    path = root / "docker-compose.host-network.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def host_network_prometheus(root: Path, service: dict[str, Any], model_port: int | None) -> None:
    """Point the Compose file's Prometheus `service` at the host's network: it listens on
    127.0.0.1:PROMETHEUS_PORT, and its config (written under `root`) scrapes the model
    service at 127.0.0.1:`model_port`, as no service name resolves there."""
    committed = root / "monitoring/prometheus/prometheus.yml"
    config = yaml.safe_load(committed.read_text(encoding="utf-8"))
    for job in config["scrape_configs"]:
        for group in job.get("static_configs", []):
            group["targets"] = [
                f"127.0.0.1:{model_port}" if t == "model:8080" else t for t in group["targets"]
            ]
    generated = committed.with_name("prometheus.host-network.yml")
    generated.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    listen = "127.0.0.1:${PROMETHEUS_PORT:-9090}"
    service["command"] = [
        f"--web.listen-address={listen}" if a.startswith("--web.listen-address=") else a
        for a in service["command"]
    ]
    service["healthcheck"]["test"] = [
        a.replace("127.0.0.1:9090", listen) for a in service["healthcheck"]["test"]
    ]
    mount = "./monitoring/prometheus/prometheus.yml:"
    service["volumes"] = [
        v.replace(mount, f"./{generated.relative_to(root)}:", 1) if v.startswith(mount) else v
        for v in service["volumes"]
    ]


def mixed_table(rows: int = 400, task: str = "classification", seed: int = 0) -> Any:
    """A table with every kind of column the features stage handles, and missing values in
    each: numbers (floats and small integers), text categories, booleans; the label (three
    classes, or a number) depends on all of them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    width = rng.normal(10, 3, rows)
    color = rng.choice(["red", "green", "blue", "violet"], rows, p=[0.4, 0.3, 0.25, 0.05])
    flag = rng.random(rows) < 0.5
    count = rng.integers(0, 5, rows)
    score = (width - 10) / 3 + (color == "red") - (color == "blue") + flag * 0.8 + count * 0.3
    frame = pd.DataFrame(
        {
            "width": width,
            "color": pd.array(color, dtype=object),
            "flag": pd.array(flag, dtype="boolean"),
            "count": pd.array(count, dtype="Int64"),
        }
    )
    for name in frame.columns:  # about one value in twelve missing, in every column
        frame.loc[rng.random(rows) < 0.08, name] = None
    if task == "regression":
        frame["target"] = np.round(score * 10 + 50 + rng.normal(0, 1, rows), 3)
    else:
        frame["target"] = np.select([score < -0.3, score < 0.9], ["low", "mid"], "high")
    return frame


def export_table_model(
    base: Path, task: str = "classification", rows: int = 400, *overrides: str, frame: Any = None
) -> Any:
    """Run the stages ingest to export, and profile, in-process on `frame` (default:
    `mixed_table`), two epochs, paths under `base`; returns the config (the model is
    cfg.paths.onnx, its card cfg.paths.card, its drift profile cfg.paths.profile)."""
    (base / "raw").mkdir(parents=True, exist_ok=True)
    frame = mixed_table(rows, task) if frame is None else frame
    frame.to_csv(base / "raw" / "data.csv", index=False)
    overrides = [
        *overrides,
        "data=tabular",
        "model=mlp",
        f"data.source.path={base}/raw/data.csv",
        "data.source.label=target",
        f"task={task}",
        "trainer.max_epochs=2",
    ]
    return run_stages_in_process(base, *overrides)


def export_image_model(base: Path, *overrides: str) -> Any:
    """Run the stages ingest to export, and profile, in-process on the default config (the
    digits and their CNN), two epochs, paths under `base`; returns the config."""
    (base / "raw").mkdir(parents=True, exist_ok=True)
    return run_stages_in_process(base, "trainer.max_epochs=2", *overrides)


def run_stages_in_process(base: Path, *overrides: str) -> Any:
    """Compose conf/ with `overrides`, paths under `base`, and run the stages ingest to
    export, the data report, explain and profile, in this process; returns the config."""
    from mlpipeline.config import compose_config
    from mlpipeline.stages.data_report import data_report
    from mlpipeline.stages.evaluate import evaluate
    from mlpipeline.stages.explain import explain
    from mlpipeline.stages.export import export
    from mlpipeline.stages.features import features
    from mlpipeline.stages.ingest import ingest
    from mlpipeline.stages.prepare import prepare
    from mlpipeline.stages.profile import profile
    from mlpipeline.stages.train import train

    cfg = tiny(compose_config(CONF, list(overrides))[1], base)
    stages = (ingest, prepare, data_report, features, train, evaluate, explain, export, profile)
    for stage in stages:
        stage(cfg)
    return cfg


@contextlib.contextmanager
def serving(repo: Path) -> Iterator[str]:
    """`python -m mlpipeline.serving` on the repository's exported model."""
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(repo / "models/model.onnx"), "PORT": str(port)}
    log = repo / "serving.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlpipeline.serving"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, f"{url}/ready", 60, log.read_text)
        yield url
    finally:
        stop(proc)


def plot_panels(repo: Path) -> dict[str, tuple[int, int]]:
    """`dvc plots show --json` in `repo`: each panel's title -> (its rows, the rows with a
    value to draw), in DVC's order."""
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    panels = {}
    for plot_id, renders in shown["data"].items():
        for render in renders:
            content = render["content"]
            title = content.get("title", plot_id)
            title = title.get("text", plot_id) if isinstance(title, dict) else title
            rows = content["data"]["values"]
            # a line's row names its y column ("field"); another template's rows hold its columns
            filled = [
                r for r in rows if all(r[k] != "" for k in ([r["field"]] if "field" in r else r))
            ]
            panels[title] = (len(rows), len(filled))
    return panels


def delta_table(path: Path) -> None:
    """Four versions of a table with missing values: 300 rows (0), 300 more (1), 200 more with
    a new column `weight` (2), the rows with id < 100 deleted (3), which rewrites their file and
    leaves the old one in the folder, as Delta does until VACUUM."""
    import deltalake
    import pyarrow as pa

    frame = mixed_table(600)
    frame.insert(0, "id", range(600))
    first = pa.Table.from_pandas(frame.iloc[:300], preserve_index=False)
    deltalake.write_deltalake(path, first)
    deltalake.write_deltalake(path, pa.Table.from_pandas(frame.iloc[300:], preserve_index=False),
                              mode="append")  # fmt: skip
    later = mixed_table(200, seed=1)
    later.insert(0, "id", range(600, 800))
    later["weight"] = [(i % 40) / 4 for i in range(200)]
    deltalake.write_deltalake(path, pa.Table.from_pandas(later, preserve_index=False),
                              mode="append", schema_mode="merge")  # fmt: skip
    deltalake.DeltaTable(path).delete("id < 100")


def partitioned_delta_table(path: Path, rows: int = 400) -> None:
    """A Delta table partitioned by `color` (missing in some rows) and `code`, text whose values
    need escaping in folder names or look like numbers ("007", "x y", "a/b", "é", missing)."""
    import deltalake
    import pyarrow as pa

    frame = mixed_table(rows)
    frame.insert(0, "id", range(rows))
    codes = np.array(["007", "x y", "a/b", "é", None], dtype=object)
    frame["code"] = codes[np.arange(rows) % len(codes)]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    deltalake.write_deltalake(path, table, partition_by=["color", "code"])
