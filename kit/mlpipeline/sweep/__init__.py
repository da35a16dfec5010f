"""Hydra multirun over training: grids (basic or parallel joblib launcher) and Optuna searches.

    python -m mlpipeline.sweep -m optimizer.lr=1e-3,1e-2 model=cnn,mlp
    python -m mlpipeline.sweep -m optimizer.lr=1e-3,1e-2 model=cnn,mlp hydra/launcher=joblib
    python -m mlpipeline.sweep hparams_search=optuna

Every trial config is validated before any trial starts (`grid`). Each trial runs the pipeline's
own stages (ingest, prepare, features, then train or crossval) in its own output directory
(<sweep dir>/<job number>/), logs one MLflow run nested under the sweep's parent run, and
returns its best validation value of `sweep.metric` (what Optuna optimises; `trial`). At the end
the best trial's overrides, score and config are printed and written to <sweep dir>/best.yaml
(`summary`).
"""
