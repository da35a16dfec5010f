"""Stage `explain`: attributions of the trained model on a seeded sample of the test split
(docs/explaining.md).

Writes `paths.attributions` (for `dvc metrics`: the mean |attribution| per source column of a
table, or per region of a 3x3 grid of an image) and `paths.explain`: importance.csv (the same,
largest first, for `dvc plots`), importance.png (its bar plot), explain.json (method, target,
baseline, rows, seed) and the data kind's own PNGs (images: heatmaps of a few correct and a
few wrong predictions). The data source picks the method (tables: feature ablation of whole
columns; images: occlusion), the task what is explained. The same commit writes the same bytes:
a seeded sample, a fixed baseline, pinned kernels.
"""

from __future__ import annotations

import json
from typing import Any

from mlpipeline.artifacts import atomic_path, write_csv, write_json, write_text
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.config.tasks import task_for
from mlpipeline.data.sources import source_for
from mlpipeline.data.splits import read_meta, read_split
from mlpipeline.determinism import sample_rows, use_portable_kernels
from mlpipeline.errors import PipelineError
from mlpipeline.explain import explain_rows, importance_rows, picked_rows
from mlpipeline.plots import EXPLAIN_COLUMNS, EXPLAIN_PLOTS, IMPORTANCE, render_plots

SHOWN_IN_LINE = 3  # the largest attributions the stage's line names


def explain(cfg: Config) -> dict[str, Any]:
    """Attribute the model's output on `explain.rows` sampled test rows; write the values,
    the bar plot and the data kind's figures; return the values."""
    # it imports torch, seconds that the stage's config check (and --help) should not wait for
    from mlpipeline.models.modelfile import load_model

    use_portable_kernels(cfg.cpu_threads)
    task, source, settings = task_for(cfg.task), source_for(cfg), cfg.explain
    meta = read_meta(cfg.paths.features)
    explainer = source.explainer(meta)
    network, _ = load_model(cfg.paths.model)
    train, _ = read_split(cfg.paths.features, "train", mmap=True)
    x, y = read_split(cfg.paths.features, "test", mmap=True)
    if len(x) == 0:
        raise PipelineError(f"{cfg.paths.features}/test has no rows to explain")
    rows = sample_rows(len(x), settings.rows, cfg.seed)
    sample, truth = x[rows], y[rows]
    result = explain_rows(network, task, explainer, train, sample, settings.batch_size)
    picked = picked_rows(task, result.outputs, truth, meta.get("classes"), settings.shown)
    with atomic_path(cfg.paths.explain, is_dir=True) as out:
        write_csv(out / EXPLAIN_PLOTS[IMPORTANCE.source], importance_rows(result.values),
                  EXPLAIN_COLUMNS[IMPORTANCE.source])  # fmt: skip
        render_plots([IMPORTANCE], cfg.paths.history, out, out)
        explainer.draw(sample, result.attributions, picked, out)
        write_json(
            out / "explain.json",
            {
                "method": explainer.method,
                "target": task.explained_as,
                "baseline": explainer.baseline_text,
                "rows": len(rows),
                "test_rows": len(x),
                "seed": cfg.seed,
                **explainer.settings(),
            },
        )
        # in the explainer's order (a table's columns, an image's regions row by row), not sorted
        text = json.dumps({"attribution": result.values}, indent=2) + "\n"
        write_text(cfg.paths.attributions, text)
    top = sorted(result.values, key=lambda n: -result.values[n])[:SHOWN_IN_LINE]
    print(
        f"explained {len(rows)} test rows ({explainer.describe()}): top "
        + ", ".join(f"{n} {result.values[n]:.3g}" for n in top)
        + f" -> {cfg.paths.attributions}"
    )
    return {"attribution": result.values}


if __name__ == "__main__":
    run_stage(explain)
