"""Stage `data_report`: the prepared splits described (`paths.data_report`): per column its
kind, missing share, distinct count, statistics and quantiles or most frequent values, its
association with the label and its shift between train, val and test (PSI); the label's class
balance or distribution per split. report.json, report.md (a page to read) and PNG histograms
(`mlpipeline.data.report`).

Streamed: each split is read a batch of rows at a time; quantiles, histograms and associations
come from a seeded sample of at most `data_report.sample_rows` rows per split. Tables: the
columns as prepared; images: per channel, each image's mean and standard deviation.
"""

from __future__ import annotations

from typing import Any

from mlpipeline.artifacts import TABLE_BATCH_ROWS
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.config.tasks import task_for
from mlpipeline.data.report import build_report, read_labels, summary_line, write_report
from mlpipeline.data.sources import source_for
from mlpipeline.data.splits import read_meta
from mlpipeline.serving import profile as bins


def data_report(cfg: Config, batch_rows: int = TABLE_BATCH_ROWS) -> dict[str, Any]:
    """Write `paths.data_report` from `paths.prepared`; return report.json's content.
    `batch_rows`: the rows of a table read at a time."""
    source, task = source_for(cfg), task_for(cfg.task)
    scans = source.report_scans(cfg, bins, batch_rows)
    report = build_report(
        scans,
        read_meta(cfg.paths.prepared),
        read_labels(cfg.paths.prepared),
        source.report_kind,
        task,
        cfg.data_report,
        cfg.seed,
        bins.psi,
        cfg.monitoring.drift.epsilon,
    )
    write_report(report, cfg.paths.data_report, cfg.data_report.max_plots)
    print(summary_line(report, cfg.paths.data_report))
    return {k: v for k, v in report.items() if not k.startswith("_")}


if __name__ == "__main__":
    run_stage(data_report)
