"""The pipeline's stage graph as DVC resolves it (`foreach`, `matrix` and `vars` expanded):
the one source of the DAG's tasks and edges, so a stage added to dvc.yaml is a task."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlpipeline.errors import PipelineError

# characters Airflow allows in a task id; DVC's addressing may hold others (`@`, `:`, `/`)
_NOT_IN_TASK_ID = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its DVC address (`train`, `train@cnn`, `sub/dvc.yaml:train`),
    the task id it runs as, and the addresses of the stages whose outputs it depends on."""

    name: str
    task_id: str
    upstream: tuple[str, ...]


def task_id(name: str) -> str:
    """An Airflow task id for a DVC stage address."""
    return _NOT_IN_TASK_ID.sub("_", name)


def address(stage: Any, root: str) -> str:
    """The stage's DVC address relative to the repository root (DVC's own `addressing` is
    relative to the working directory): `train`, `train@cnn`, `sub/dvc.yaml:train`."""
    dvcfile = os.path.relpath(stage.dvcfile.path, root)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def open_repo(root: Path) -> Any:
    """DVC's Repo at `root`; PipelineError in one line if there is none."""
    # DVC here, not at the top: the DAG file imports this module in Airflow's environment
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise PipelineError(f"{root} is not a DVC repository: point it at a checkout") from None


def pipeline_stages(repo: Any) -> list[Any]:
    """The index's pipeline stages (those with a command; `.dvc` files are data, not tasks)
    in an order where every stage comes after the stages it depends on."""
    # as open_repo: Airflow's environment, which imports this module, has no DVC
    import networkx as nx
    from dvc.stage import PipelineStage

    graph = repo.index.graph  # edges run from a stage to the stages it depends on
    order = list(reversed(list(nx.topological_sort(graph))))
    return [s for s in order if isinstance(s, PipelineStage)]


def read_graph(root: Path) -> list[Stage]:
    """The stage graph of the DVC repository at `root`, dependencies first."""
    from dvc.exceptions import DvcException  # as open_repo: not in Airflow's environment

    repo = open_repo(root)
    try:
        stages = pipeline_stages(repo)
        graph = repo.index.graph
        name = {stage: address(stage, repo.root_dir) for stage in stages}
        result = [
            Stage(
                name=name[stage],
                task_id=task_id(name[stage]),
                upstream=tuple(sorted(name[d] for d in graph.successors(stage) if d in name)),
            )
            for stage in stages
        ]
    except DvcException as err:
        raise PipelineError(f"dvc cannot read the pipeline of {root}: {err}") from None
    finally:
        repo.close()
    ids: dict[str, str] = {}
    for stage in result:
        if ids.setdefault(stage.task_id, stage.name) != stage.name:
            raise PipelineError(
                f"stages {ids[stage.task_id]} and {stage.name} map to one task id "
                f"{stage.task_id}: rename one of them"
            )
    return result


def to_json(stages: list[Stage]) -> str:
    """The graph as JSON text (what `python -m mlpipeline.ops.orchestrate graph` prints)."""
    return json.dumps([asdict(s) for s in stages], indent=2) + "\n"


def from_json(text: str) -> list[Stage]:
    """The graph from `to_json`'s text."""
    return [Stage(s["name"], s["task_id"], tuple(s["upstream"])) for s in json.loads(text)]
