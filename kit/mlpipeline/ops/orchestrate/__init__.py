"""The DVC pipeline on a workflow engine: one task per stage of DVC's own resolved graph.

`graph` reads the stage graph from DVC and `runner` runs one stage in a workspace (its deps
pulled from the DVC remote, `dvc repro --single-item`, its outs pushed) with the hand-off
(`handoff`) that carries dvc.lock's entries and the files git would commit from task to task;
both run in the pipeline's environment. `settings` and `dag` (Airflow) run in Airflow's
environment and import neither DVC nor torch: they call the runner as a program
(`python -m mlpipeline.ops.orchestrate`). docs/orchestration.md tells how to deploy it.
"""
