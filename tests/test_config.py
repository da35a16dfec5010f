"""Composition of conf/ into params.yaml, and the schema's error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from mlpipeline.compose import STAMP_TEXT, compose_config, compose_stage
from mlpipeline.config import check_targets, load_config, validate_config
from mlpipeline.errors import PipelineError


def test_committed_params_yaml_is_the_composition_of_conf() -> None:
    text, _ = compose_config(ROOT / "conf")
    assert (ROOT / "params.yaml").read_text() == text, "run `python -m mlpipeline.compose`"


def test_compose_stage_writes_params_and_stamp(tmp_path: Path) -> None:
    out, stamp = tmp_path / "params.yaml", tmp_path / "stamp"
    cfg = compose_stage(ROOT / "conf", out, stamp, ["model=mlp"])
    assert cfg.model.target == "mlpipeline.nets.MLP"
    assert load_config(out) == cfg
    assert stamp.read_text() == STAMP_TEXT


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+evaluate.batchsize=3", "evaluate.batchsize: unknown key; did you mean 'batch_size'?"),
        ("optimizer.lr=-0.1", "optimizer.lr: Input should be greater than 0 (got -0.1)"),
        ("trainer.max_epochs=0", "trainer.max_epochs: Input should be greater than or equal to 1"),
        ("data.split.val=0.3", "must sum to 1"),
        ("data.batch_size=many", "data.batch_size: Input should be a valid integer"),
        ("data.source.kind=xlsx", "'digits', 'csv', 'parquet'"),
        ("model=transformer", "available options in 'model': cnn, mlp"),
        ("+trainer.max_epoch=3", "trainer.max_epoch: lightning.pytorch.Trainer takes no argument"),
    ],
)
def test_bad_config_fails_in_one_line_naming_the_key(
    tmp_path: Path, override: str, expected: str
) -> None:
    out = tmp_path / "params.yaml"
    with pytest.raises(PipelineError) as err:
        compose_stage(ROOT / "conf", out, tmp_path / "stamp", [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists(), "nothing is written when validation fails"


def test_misspelt_target_argument_suggests_the_right_one(make_cfg) -> None:
    raw = make_cfg().model_dump(mode="json", by_alias=True)
    raw["optimizer"]["weight_decya"] = 0.1
    with pytest.raises(PipelineError, match="did you mean 'weight_decay'"):
        check_targets(validate_config(raw))


def test_missing_params_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"mlpipeline\.compose"):
        load_config(tmp_path / "params.yaml")


def test_dvc_yaml_paths_match_the_configured_paths() -> None:
    import yaml

    paths = yaml.safe_load((ROOT / "conf/paths/default.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def declared(stage: str) -> set[str]:
        entries = [*stages[stage].get("deps", [])]
        for kind in ("outs", "metrics", "plots"):
            entries += [
                e if isinstance(e, str) else next(iter(e)) for e in stages[stage].get(kind, [])
            ]
        return set(entries)

    assert paths["raw"] in declared("ingest") and paths["ingested"] in declared("ingest")
    assert paths["prepared"] in declared("prepare")
    assert paths["model"] in declared("train")
    assert f"{paths['reports']}/metrics.json" in declared("evaluate")
    assert {paths["onnx"], paths["card"], paths["reference"]} <= declared("export")
