"""Imported by the joblib launcher's fork server (`sweep.warm_joblib_workers`), so that every
worker forks with a trial's modules loaded: torch, Lightning, torchmetrics, scikit-learn, MLflow
and its SQLite store, ~7 s of imports that would otherwise be each worker's.

They are imported with the garbage collector off (its passes over the growing heap are 1 to 2 s
of those 7 here) and then frozen into its permanent generation: the workers' collections
neither traverse those objects nor copy their pages, and the server exits at once instead of
spending 2 to 3 s collecting them, with the sweep's output held open meanwhile.
"""

import contextlib
import gc
import importlib

TRIAL_MODULES = [
    "mlpipeline.model",
    "mlpipeline.datamodule",
    "mlpipeline.train",
    "mlpipeline.tracking",
    "mlpipeline.ingest",
    "mlpipeline.prepare",
    "sklearn.model_selection",  # prepare's stratified split
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",  # what opening the SQLite store imports (~1 s)
]

gc.disable()
try:
    for name in TRIAL_MODULES:
        with contextlib.suppress(ImportError):  # as the fork server does: the trial will say
            importlib.import_module(name)
finally:
    gc.freeze()
    gc.enable()
