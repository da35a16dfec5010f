"""A run's hand-offs and errors kept as small files under a run prefix (an S3 prefix in the DVC
remote's bucket, or any fsspec URL): for engines whose task outputs cannot carry a hand-off of
a few tens of kB from a container, such as AWS Step Functions (256 kB per state, and a Batch
job returns no output at all). Each stage writes `<store>/<run>/<stage>.json` when it succeeds
and `<store>/<run>/<stage>.error` (its one-line error) when it fails; the stages after it read
the first, the state machine reads the second to report the failure."""

from __future__ import annotations

import fsspec

from mlpipeline.errors import PipelineError

HANDOFF_SUFFIX = ".json"
ERROR_SUFFIX = ".error"


def object_name(stage: str, suffix: str) -> str:
    """A stage's file name in a run's folder: its hand-off (`.json`) or its error (`.error`)."""
    # a stage address may hold `/` and `:` (sub/dvc.yaml:train): one flat name per stage
    return stage.replace("/", "_").replace(":", "_") + suffix


def object_url(store: str, run: str, stage: str, suffix: str) -> str:
    """Where a stage of a run keeps its hand-off (`.json`) or its error (`.error`)."""
    return f"{store.rstrip('/')}/{run}/{object_name(stage, suffix)}"


def read_handoffs(store: str, run: str, stages: list[str]) -> list[str]:
    """The hand-off lines the upstream `stages` of this run wrote; PipelineError in one line
    naming the first that is missing or unreadable."""
    lines = []
    for stage in stages:
        url = object_url(store, run, stage, HANDOFF_SUFFIX)
        try:
            with fsspec.open(url, "r", encoding="utf-8") as f:
                lines.append(f.read().strip())
        except FileNotFoundError:
            raise PipelineError(
                f"no hand-off from stage {stage} at {url}: it has not run in run {run} "
                "(start the run from the first stages)"
            ) from None
        except (OSError, ImportError, ValueError) as err:
            raise PipelineError(
                f"cannot read the hand-off of stage {stage} at {url}: {err}"
            ) from None
    return lines


def write_text(url: str, text: str) -> None:
    """Write one small object whole (an S3 put is atomic; a local file is written in place)."""
    try:
        fs, path = fsspec.core.url_to_fs(url)
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.pipe_file(path, text.encode("utf-8"))
    except (OSError, ImportError, ValueError) as err:
        raise PipelineError(f"cannot write {url}: {err}") from None
