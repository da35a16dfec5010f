"""Imported by the joblib launcher's fork server (`mlpipeline.sweep.workers`), so that every
worker forks with a trial's modules loaded: torch, Lightning, torchmetrics, scikit-learn, MLflow
and its SQLite store.

They are imported with the garbage collector off (its passes over the growing heap are a good
part of the import time) and then frozen into its permanent generation: the workers'
collections neither traverse those objects nor copy their pages, and the server exits at once
instead of collecting them, with the sweep's output held open meanwhile.
"""

import contextlib
import gc
import importlib

TRIAL_MODULES = [
    "lightning",
    "torchmetrics",
    "mlpipeline.data.datamodule",
    "mlpipeline.models.training",
    "mlpipeline.tracking",
    "mlpipeline.data.sources",
    "mlpipeline.data.splits",
    "mlpipeline.sweep.trial",
    "mlpipeline.stages.train",
    "mlpipeline.stages.crossval",
    "sklearn.model_selection",  # the stratified split
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",  # what opening the SQLite store imports
]

gc.disable()
try:
    for name in TRIAL_MODULES:
        with contextlib.suppress(ImportError):  # as the fork server does: the trial will say
            importlib.import_module(name)
finally:
    gc.freeze()
    gc.enable()
