"""The training image of the DAG's docker mode (docker/train.Dockerfile), through the Docker SDK:

    python -m mlpipeline.ops.train_image build   # make train-image

The build context holds the lock (lock/), the torch and torchvision wheels when TORCH_INDEX
names a folder (wheels/), and the repository at HEAD (`git archive`) as a one-commit git
repository (workspace/), whose source revision the image records (MLPIPELINE_REVISION, and
its labels).
Settings from the environment: BASE_IMAGE, TRAIN_IMAGE_TAG, TORCH_INDEX (an index URL or a
folder of wheels, as for `make install`), DOCKER_NETWORK. Without a Docker daemon it says so
in one line and exits 1.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from docker.models.images import Image
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.git import source_url
from mlpipeline.ops.docker import MB, build, connect, dockerfile_base, ensure_base_image

DOCKERFILE = Path("docker/train.Dockerfile")
LOCK_FILES = ("pyproject.toml", "uv.lock", "docker/locked.py")


class TrainImageSettings(BaseSettings):
    """From environment variables BASE_IMAGE, TRAIN_IMAGE_TAG, TORCH_INDEX, DOCKER_NETWORK."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    base_image: str | None = None
    train_image_tag: str = "mlpipeline-train:latest"
    torch_index: str = ""
    docker_network: str = "bridge"


def git(repo: Path, *args: str) -> bytes:
    """A git command's output in `repo`; PipelineError in one line when it fails."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True)
    if proc.returncode != 0:
        raise PipelineError(f"git {' '.join(args)} in {repo}: {proc.stderr.decode().strip()}")
    return proc.stdout


def locked_version(uv_lock: str, name: str) -> str:
    """A package's version in uv.lock (the line after its name, as the Makefile reads it)."""
    found = re.search(rf'^name = "{re.escape(name)}"\nversion = "([^"]+)"$', uv_lock, re.M)
    if not found:
        raise PipelineError(f"uv.lock pins no {name}")
    return found.group(1)


def layout_context(repo: Path, context: Path, torch_index: str) -> dict[str, str]:
    """Lay the build context out in `context` (lock/, wheels/, workspace/, Dockerfile);
    returns the build arguments it needs besides BASE_IMAGE."""
    revision = git(repo, "rev-parse", "HEAD").decode().strip()
    workspace = context / "workspace"
    workspace.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(git(repo, "archive", "--format=tar", "HEAD"))) as tar:
        # the "data" filter where this Python has it (3.10.12 and later): plain files only
        tar.extractall(workspace, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    for name in LOCK_FILES:
        (context / "lock").mkdir(exist_ok=True)
        shutil.copy2(workspace / name, context / "lock" / Path(name).name)
    shutil.copy2(workspace / DOCKERFILE, context / "Dockerfile")
    wheels = context / "wheels"
    wheels.mkdir()
    if torch_index and Path(torch_index).is_dir():
        lock = (workspace / "uv.lock").read_text()
        for package in ("torch", "torchvision"):
            version = locked_version(lock, package)
            found = sorted(Path(torch_index).glob(f"{package}-{version}*.whl"))
            if not found:
                raise PipelineError(f"no {package} {version} wheel in TORCH_INDEX={torch_index}")
            for wheel in found:
                shutil.copy2(wheel, wheels / wheel.name)
        torch_index = "/tmp/build/wheels"
    # the workspace is a git repository of one commit: DVC and the runner compare against it
    snapshot = ["-c", "user.name=mlpipeline", "-c", "user.email=mlpipeline@localhost"]
    git(workspace, "init", "-q")
    git(workspace, "add", "-A")
    git(workspace, *snapshot, "commit", "-q", "-m", f"snapshot of {revision}")
    return {"TORCH_INDEX": torch_index, "GIT_COMMIT": revision, "SOURCE_URL": source_url(repo)}


def build_train_image(
    repo: Path, settings: TrainImageSettings, tag: str | None = None, quiet: bool = False
) -> Image:
    """Build the training image of the repository at `repo` (its HEAD commit)."""
    client = connect()
    base = settings.base_image or dockerfile_base(repo / DOCKERFILE)
    ensure_base_image(client, base)
    with tempfile.TemporaryDirectory(prefix="mlpipeline-train-image-") as tmp:
        buildargs = {"BASE_IMAGE": base, **layout_context(repo, Path(tmp), settings.torch_index)}
        return build(
            client,
            Path(tmp),
            "Dockerfile",
            tag or settings.train_image_tag,
            buildargs,
            settings.docker_network,
            quiet,
        )


def main(argv: list[str] | None = None) -> None:
    """Command line: `build`; PipelineError becomes one line and exit status 1."""
    parser = argparse.ArgumentParser(
        prog="python -m mlpipeline.ops.train_image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the training image")
    build_cmd.add_argument("--repo", type=Path, default=Path("."), help="repository root")
    build_cmd.add_argument("--tag", help="image tag (env TRAIN_IMAGE_TAG)")
    build_cmd.add_argument("--quiet", action="store_true", help="no build log")
    args = parser.parse_args(argv)
    with exit_on_error("interrupted"):
        image = build_train_image(args.repo, TrainImageSettings(), args.tag, args.quiet)
        print(f"built {image.tags[0]} ({image.short_id}, {image.attrs['Size'] / MB:.1f} MB)")


if __name__ == "__main__":
    main()
