"""The serving image, through the Docker SDK: build it, then smoke-test it.

    python -m mlpipeline.ops.image build   # docker build of the Dockerfile (make image)
    python -m mlpipeline.ops.image smoke   # run it, check it on the test split (make smoke)

`build` passes BASE_IMAGE (env; default the Dockerfile's own, pinned by digest), GIT_COMMIT,
MODEL_MD5 and SOURCE_URL as build arguments; `buildargs` prints them, for other builders.
`smoke` starts a container with its port published on 127.0.0.1, times it from start to
ready, sends the test split and compares the answers with the export stage's reference
outputs, waits for the image's HEALTHCHECK to pass, and reports the image's size, the size it
adds to its base and its time to ready. DOCKER_NETWORK=host runs builds and the container on
the host's network instead. Without a Docker daemon either command says so in one line and
exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import numpy as np
from docker.errors import ImageNotFound
from docker.models.images import Image
from pydantic import ValidationError

from mlpipeline.artifacts import md5_file
from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.git import revision, source_url
from mlpipeline.ops import smoke as checks
from mlpipeline.ops.docker import (
    MB,
    DockerSettings,
    build,
    connect,
    dockerfile_base,
    ensure_base_image,
    free_port,
    health,
    running,
    serve_image_tag,
)


@dataclass(frozen=True)
class SmokeReport:
    """What `smoke` measured and checked."""

    image: str
    image_mb: float
    base_image: str
    base_mb: float
    added_mb: float
    create_s: float
    ready_s: float
    rows: int
    max_abs_diff: float
    health: str
    user: str
    labels: dict[str, str]


def build_args(
    context: Path, base_image: str | None, git_commit: str | None = None
) -> dict[str, str]:
    """The image's build arguments: its base, and the commit, model and source it labels."""
    model = context / "models" / "model.onnx"
    models = context / "models"
    for needed in (
        context / "Dockerfile",
        model,
        models / "model_card.json",
        models / "profile.json",
    ):
        if not needed.is_file():
            raise PipelineError(f"{needed} not found: run `dvc repro` first (it exports the model)")
    return {
        "BASE_IMAGE": base_image or dockerfile_base(context / "Dockerfile"),
        "GIT_COMMIT": git_commit or revision(context),
        "MODEL_MD5": md5_file(model),
        "SOURCE_URL": source_url(context),
    }


def build_image(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    base_image: str | None = None,
    network: str = "bridge",
    git_commit: str | None = None,
    quiet: bool = False,
) -> Image:
    """Build the serving image of the repository at `context` (its Dockerfile and
    .dockerignore) with the classic builder."""
    buildargs = build_args(context, base_image, git_commit)
    ensure_base_image(client, buildargs["BASE_IMAGE"])
    return build(client, context, "Dockerfile", tag, buildargs, network, quiet)


def smoke(
    client: docker.DockerClient,
    tag: str,
    base_image: str,
    x: Any,  # the test rows: records of a table, or an array
    reference: np.ndarray,
    port: int | None = None,
    network: str = "bridge",
) -> SmokeReport:
    """Run the image, check it against the reference outputs, and measure it."""
    try:
        image = client.images.get(tag)
    except ImageNotFound:
        raise PipelineError(f"image {tag} not found: build it first (make image)") from None
    base = ensure_base_image(client, base_image)
    with running(client, tag, port or free_port(), network) as run:
        with httpx.Client(base_url=run.url, timeout=10) as http:
            meta = http.get("/metadata").json()
        probs, classes = checks.predict_all(run.url, x, int(meta["serving"]["max_batch"]))
        diff = checks.compare(
            probs, classes, reference, [str(c) for c in meta.get("classes") or []]
        )
        verdict = health(run.container)
    return SmokeReport(
        image=tag,
        image_mb=image.attrs["Size"] / MB,
        base_image=base_image,
        base_mb=base.attrs["Size"] / MB,
        added_mb=(image.attrs["Size"] - base.attrs["Size"]) / MB,
        create_s=run.create_s,
        ready_s=run.ready_s,
        rows=len(x),
        max_abs_diff=diff,
        health=verdict,
        user=image.attrs["Config"].get("User") or "root",
        labels=image.labels,
    )


def describe(report: SmokeReport) -> str:
    """The report as a few lines of text."""
    labels = report.labels
    return "\n".join(
        [
            f"image {report.image}: {report.image_mb:.1f} MB; base {report.base_image} "
            f"{report.base_mb:.1f} MB; added {report.added_mb:.1f} MB",
            f"ready {report.ready_s:.2f} s after container start; creating the container took "
            f"{report.create_s:.2f} s before that",
            f"test split: {report.rows} rows, classes identical, max |Δp| "
            f"{report.max_abs_diff:.1e} vs reference (limit {checks.ATOL:g})",
            f"healthcheck {report.health}; runs as {report.user}; revision "
            f"{labels.get('org.opencontainers.image.revision')}; model md5 "
            f"{labels.get('io.mlpipeline.model.md5')}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: `build` and `smoke`; PipelineError becomes one line and exit status 1."""
    try:
        settings = DockerSettings()
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "setting"
        print(f"error: bad setting {name}={first.get('input')!r}: {first['msg']}", file=sys.stderr)
        sys.exit(2)
    parser = argparse.ArgumentParser(
        prog="python -m mlpipeline.ops.image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tag", help="image tag (env IMAGE_TAG; default: <project>-serve:latest, params.yaml's)"
    )
    common.add_argument(
        "--base-image",
        default=settings.base_image,
        help="base image (env BASE_IMAGE; default: the Dockerfile's)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", parents=[common], help="build the serving image")
    build_cmd.add_argument("--context", type=Path, default=Path("."), help="repository root")
    build_cmd.add_argument("--quiet", action="store_true", help="no build log")
    check = commands.add_parser(
        "smoke", parents=[common], help="run the image and check it on the test split"
    )
    check.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    checks.add_check_inputs(check)
    args_cmd = commands.add_parser(
        "buildargs", parents=[common], help="print the build arguments, one KEY=VALUE a line"
    )
    args_cmd.add_argument("--context", type=Path, default=Path("."), help="repository root")
    commands.add_parser("tag", parents=[common], help="print the image tag")
    args = parser.parse_args(argv)
    network = settings.docker_network
    with exit_on_error("interrupted"):
        args.tag = args.tag or serve_image_tag(settings)
        if args.command == "tag":
            print(args.tag)
            return
        if args.command == "buildargs":
            for key, value in build_args(args.context, args.base_image).items():
                print(f"{key}={value}")
            return
        if args.command == "build":
            client = connect()
            image = build_image(
                client, args.context, args.tag, args.base_image, network, quiet=args.quiet
            )
            print(f"built {args.tag} ({image.short_id}, {image.attrs['Size'] / MB:.1f} MB)")
            return
        x, reference = checks.load_check_inputs(args.test, args.reference, args.images)
        client = connect()
        base = args.base_image or settings.base()
        report = smoke(client, args.tag, base, x, reference, args.port, network)
        print(describe(report))
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
