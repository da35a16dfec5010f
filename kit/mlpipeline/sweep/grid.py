"""Validation of a whole grid before its first trial runs."""

from __future__ import annotations

import itertools
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from mlpipeline.config import check_targets, compose_config
from mlpipeline.config.guard import allowed_prefixes, check_overrides
from mlpipeline.errors import PipelineError
from mlpipeline.sweep.workers import check_in_server


def prevalidate(conf_dir: Path, argv: list[str], in_server: bool = False) -> int:
    """Compose and validate every grid point named on the command line before any trial
    runs; return how many were checked. Search-space overrides (interval) are left to the
    sweeper, which validates each trial again. `in_server`: check the `_target_`s in a process
    forked from the joblib workers' warm server (`mlpipeline.sweep.workers.check_in_server`)."""
    tokens = [a for a in argv if "=" in a and not a.startswith("-")]
    # Hydra's own overrides too: it instantiates its callbacks, launcher and sweeper itself
    check_overrides(tokens, allowed_prefixes(conf_dir))
    try:
        parsed = OverridesParser.create().parse_overrides(tokens)
    except Exception as err:  # Hydra's grammar errors
        raise PipelineError(" ".join(str(err).split())) from None
    fixed, axes = [], []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if not o.is_sweep_override():
            fixed.append(o.input_line)
        elif o.is_discrete_sweep():
            prefix = o.get_key_element()
            axes.append([f"{prefix}={v}" for v in o.sweep_string_iterator()])
    configs = [compose_config(conf_dir, [*fixed, *combo])[1] for combo in itertools.product(*axes)]
    if in_server:
        check_in_server(configs)
    else:
        for cfg in configs:
            check_targets(cfg)
    return len(configs)
