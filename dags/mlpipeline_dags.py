"""The mlpipeline DAGs for Apache Airflow: copy this file into Airflow's dags folder.

It builds one task per stage of the DVC pipeline of the checkout that MLPIPELINE_REPO names
(a stage added to dvc.yaml is a task at the next parse, with no edit here), and the watch DAG
that triggers it when the raw data's DVC hash changes. Airflow's environment needs the
`mlpipeline` package installed without its dependencies (`make airflow-install` does it);
settings: mlpipeline/ops/orchestrate/settings.py, deployment: docs/orchestration.md.
"""

from mlpipeline.ops.orchestrate.dag import build_dags
from mlpipeline.ops.orchestrate.settings import Settings

globals().update(build_dags(Settings.from_env()))
