"""The sweep's validation of its overrides before Hydra runs anything (no trial runs here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import CONF

from mlpipeline.errors import PipelineError
from mlpipeline.sweep.grid import prevalidate


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "+callbacks.x._target_=builtins.print,builtins.open", "+callbacks.x.file=f"],
        # Hydra instantiates its callbacks itself, before the first trial
        ["-m", "seed=1,2", "+hydra.callbacks.x._target_=builtins.exec"],
        [
            "hparams_search=optuna",
            "+hydra.sweeper.params={callbacks.x._target_: 'choice(os.system)'}",
        ],
        ["-m", "seed=1,2", "tracking.experiment=${oc.env:HOME}"],
    ],
    ids=["choice", "hydra-callback", "optuna-space", "environment"],
)
def test_a_sweep_override_with_a_forbidden_target_or_resolver_is_refused(
    tmp_path: Path, argv: list[str]
) -> None:
    conf = Path(shutil.copytree(CONF, tmp_path / "conf"))
    with pytest.raises(PipelineError) as err:
        prevalidate(conf, argv)
    message = str(err.value)
    assert "\n" not in message
    assert "is not in a package a _target_ may name" in message or "calls the resolver" in message
