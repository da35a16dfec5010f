"""`python -m mlpipeline.sweep`: validate the grid, then hand over to Hydra's multirun."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra

from mlpipeline.config import validate_config
from mlpipeline.determinism import prepare_process
from mlpipeline.errors import exit_on_error
from mlpipeline.sweep.files import TRIAL_ENV
from mlpipeline.sweep.grid import prevalidate
from mlpipeline.sweep.trial import task
from mlpipeline.sweep.workers import warm_joblib_workers


def main() -> None:
    """Prepare the process, validate the grid, then hand over to Hydra (which parses
    sys.argv)."""
    prepare_process()
    if (trial := os.environ.get(TRIAL_ENV)) and int(os.environ.get("LOCAL_RANK", "0")) > 0:
        # Lightning only where it trains: this rank joins its trial's training, nothing else
        from mlpipeline.models.training import fit

        fit(validate_config(json.loads(trial), source="DDP trial config"))
        return
    conf_dir = Path(os.environ.get("MLPIPELINE_CONF", "conf")).resolve()
    parallel = any(a.replace(" ", "").startswith("hydra/launcher=joblib") for a in sys.argv[1:])
    if parallel:
        warm_joblib_workers()
    with exit_on_error():
        prevalidate(conf_dir, sys.argv[1:], in_server=parallel)
    hydra.main(config_path=str(conf_dir), config_name="config", version_base=None)(task)()


if __name__ == "__main__":
    main()
