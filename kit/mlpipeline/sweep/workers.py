"""Warm workers for the joblib launcher: forked from a server that has imported what a trial
needs, instead of fresh interpreters that each import torch, Lightning and MLflow again."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
from concurrent.futures import ProcessPoolExecutor

from joblib.externals.loky.backend import context

from mlpipeline.config import Config, check_targets


def warm_joblib_workers() -> None:
    """Have the joblib launcher's workers forked from a server that has imported what a trial
    needs (`mlpipeline.sweep.forkserver`), and start that server now, so that its imports
    overlap the parent's validation of the grid. Loky, the backend Hydra's joblib launcher
    always uses, otherwise starts every worker as a fresh interpreter. The server forks before
    any computation, so its children start clean."""
    if context.get_start_method() == "forkserver":
        return
    # "__main__": the stdlib's convention for the script itself, when started by its path
    multiprocessing.set_forkserver_preload(["__main__", "mlpipeline.sweep.forkserver"])
    context.set_start_method("forkserver", force=True)
    multiprocessing.forkserver.ensure_running()


def check_in_server(configs: list[Config]) -> None:
    """`check_targets` for each config, in a child of the fork server, which imports torch and
    Lightning for the workers anyway: under the joblib launcher the sweep's own process never
    trains, and importing them there too would hold up the first trial. Meanwhile the sweep's
    process imports what it does need next, MLflow for the sweep's parent run."""
    # here, not at the top: this is the moment to load it, while the server checks the configs
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(check_targets, configs))  # re-raises the first config's PipelineError
