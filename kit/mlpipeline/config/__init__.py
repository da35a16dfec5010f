"""The configuration: Hydra composition of conf/, the typed schema of the result (params.yaml),
the checks of `_target_` sections against the classes they name, and the task object that
`task` selects (`task_for`)."""

from mlpipeline.config.composition import compose_config
from mlpipeline.config.schema import (
    Config,
    Paths,
    Split,
    Target,
    load_config,
    validate_config,
)
from mlpipeline.config.targets import check_targets, check_targets_once, instantiate, locate
from mlpipeline.config.tasks import Task, task_for

__all__ = [
    "Config",
    "Paths",
    "Split",
    "Target",
    "Task",
    "check_targets",
    "check_targets_once",
    "compose_config",
    "instantiate",
    "load_config",
    "locate",
    "task_for",
    "validate_config",
]
