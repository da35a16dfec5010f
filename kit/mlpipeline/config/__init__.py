"""The configuration: Hydra composition of conf/, the typed schema of the result (params.yaml),
and the checks of `_target_` sections against the classes they name."""

from mlpipeline.config.composition import compose_config
from mlpipeline.config.schema import (
    Config,
    DigitsSource,
    Paths,
    Split,
    TableSource,
    Target,
    load_config,
    validate_config,
)
from mlpipeline.config.targets import check_targets, check_targets_once, instantiate, locate

__all__ = [
    "Config",
    "DigitsSource",
    "Paths",
    "Split",
    "TableSource",
    "Target",
    "check_targets",
    "check_targets_once",
    "compose_config",
    "instantiate",
    "load_config",
    "locate",
    "validate_config",
]
