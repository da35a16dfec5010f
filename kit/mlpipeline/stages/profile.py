"""Stage `profile`: the drift reference (models/profile.json): the training split binned, and
the model's predictions on it. The serving image ships it beside the model; the service counts
each request against its bins, Prometheus's rules and `make drift` score those counts against
its shares (docs/monitoring.md).

Tables: per raw column (as clients send it), quantile bins and a missing slot for numeric
columns, the most frequent values plus "(other)" and "(missing)" for categorical ones. Images:
per channel, the quantile bins of each example's mean and standard deviation. Predictions:
the predicted class shares, or a regression's value in quantile bins. PyTorch computes the
predictions, with the pinned kernels, so the file's bytes follow from the pipeline's inputs
alone (ONNX Runtime's last bits vary by CPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlpipeline.artifacts import md5_file, write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.config.tasks import task_for
from mlpipeline.data.sources import source_for
from mlpipeline.data.splits import read_meta, read_split
from mlpipeline.determinism import sample_rows, use_portable_kernels
from mlpipeline.errors import PipelineError
from mlpipeline.serving import profile as bins


def build_profile(cfg: Config) -> bins.Profile:
    """The profile of `paths.features`' training split and `paths.model`'s predictions: the
    inputs binned as the data source's kind says, the predictions as the task says."""
    # it imports torch, seconds that the stage's config check (and --help) should not wait for
    from mlpipeline.models.modelfile import load_model

    use_portable_kernels(cfg.cpu_threads)
    source, task = source_for(cfg), task_for(cfg.task)
    network, _ = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.features)
    x, _ = read_split(cfg.paths.features, "train", mmap=True)
    if len(x) == 0:
        raise PipelineError(f"{cfg.paths.features}/train has no rows to profile")
    settings = cfg.monitoring.profile
    rows = sample_rows(len(x), settings.rows, cfg.seed)
    sample = np.asarray(x[rows])
    outputs = task.predict(network, sample).numpy()
    return bins.Profile(
        input=source.input_kind,
        rows=len(rows),
        model_md5=md5_file(cfg.paths.model),
        columns=source.profile_columns(bins, cfg, meta, rows, sample),
        prediction=task.profile_prediction(bins, outputs, meta["classes"], settings.bins),
    )


def profile(cfg: Config) -> dict[str, Any]:
    """Write `paths.profile`; return what was written."""
    built = build_profile(cfg)
    written = built.model_dump(mode="json", exclude_none=True)
    write_json(cfg.paths.profile, written)
    what = source_for(cfg).profile_summary(built.columns)
    print(
        f"profile: {what} and the predictions ({len(built.prediction.bins())} bins) of "
        f"{built.rows} training rows -> {cfg.paths.profile}"
    )
    return written


if __name__ == "__main__":
    run_stage(profile)
