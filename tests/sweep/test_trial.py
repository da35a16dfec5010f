"""A sweep trial's hand-over to DDP ranks: set and given back by key, nothing else touched."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from mlpipeline.config import Config
from mlpipeline.sweep.files import TRIAL_ENV
from mlpipeline.sweep.trial import trial_environment


def test_a_trial_gives_back_the_launchers_variables_and_leaves_the_others(
    make_cfg: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg()
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")  # set by torchrun or SLURM: it stays
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.delenv(TRIAL_ENV, raising=False)
    monkeypatch.setenv("MY_TRIAL_SETTING", "0")
    with trial_environment(cfg):
        assert json.loads(os.environ[TRIAL_ENV]) == cfg.dump()
        # what Lightning's launcher sets for its ranks, and what the trial itself sets
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", MY_TRIAL_SETTING="1")
    assert TRIAL_ENV not in os.environ and "MASTER_PORT" not in os.environ
    assert os.environ["MASTER_ADDR"] == "10.0.0.1"
    assert os.environ["MY_TRIAL_SETTING"] == "1"
