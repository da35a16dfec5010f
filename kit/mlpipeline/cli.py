"""Thin command-line wrapper shared by the stage modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpipeline.config import load_config
from mlpipeline.determinism import prepare_process
from mlpipeline.errors import exit_on_error


def run_stage(stage: Callable[[Any], object], description: str | None = None) -> None:
    """Prepare the process (`prepare_process`), parse `--params`, load and validate the
    config, run `stage`, and turn PipelineError into a one-line message with exit status 1 (no
    traceback)."""
    prepare_process()
    parser = argparse.ArgumentParser(description=description or stage.__doc__)
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="resolved config (params.yaml)"
    )
    args = parser.parse_args()
    with exit_on_error():
        stage(load_config(args.params))
