"""mlpipeline.config: composition of conf/ into params.yaml, the schema, the checks of the
`_target_` sections, and their one-line error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import CONF, ROOT

from mlpipeline.config import (
    check_targets,
    check_targets_once,
    compose_config,
    load_config,
    task_for,
    validate_config,
)
from mlpipeline.config import targets as target_checks
from mlpipeline.errors import PipelineError
from mlpipeline.ops.docker import DockerSettings, serve_image_tag
from mlpipeline.plots import IMPORTANCE, definitions
from mlpipeline.stages.compose import STAMP_TEXT, changes, compose_stage


def test_conf_composes_and_params_yaml_is_its_composition() -> None:
    """The project's conf/ composes and validates; params.yaml, where there is one (a new
    project has none until its first `make pipeline` composes it), is its composition."""
    text, _ = compose_config(ROOT / "conf")
    if (ROOT / "params.yaml").is_file():
        assert (ROOT / "params.yaml").read_text() == text, (
            "run `python -m mlpipeline.stages.compose`"
        )


def test_compose_stage_writes_params_and_stamp(tmp_path: Path) -> None:
    out, stamp = tmp_path / "params.yaml", tmp_path / "stamp"
    cfg = compose_stage(CONF, out, stamp, ["model=mlp"])
    assert cfg.model.target == "myproject.models.nets.MLP"
    assert load_config(out) == cfg
    assert stamp.read_text() == STAMP_TEXT


def test_compose_stage_writes_the_tasks_plot_definitions_beside_params(tmp_path: Path) -> None:
    """`dvc plots show` draws the task's panels alone: a regression's has no accuracy, no
    confusion matrix, and no panel of the other task that would be empty."""
    out = tmp_path / "params.yaml"
    compose_stage(CONF, out, tmp_path / "stamp", ["data=tabular", "task=regression"])
    written = yaml.safe_load((tmp_path / "reports/dvc.yaml").read_text())
    panels = {next(iter(p)): next(iter(p.values())) for p in written["plots"]}
    assert [p["title"] for p in panels.values()] == [
        "Loss",
        "Validation error",
        "Predicted vs actual (test)",
        "Residuals (test)",
        "Mean |attribution| (test sample)",  # the explain stage's, for every task
    ]
    # paths relative to the file, as DVC reads a dvc.yaml's
    assert panels["residuals"]["y"] == {"eval/predictions.csv": ["residual"]}
    assert panels["importance"]["y"] == {"explain/importance.csv": ["name"]}
    assert panels["loss"]["y"] == {"train/history.csv": ["train_loss", "val_loss"]}


def test_plot_definitions_are_the_composition_of_conf() -> None:
    """The task's plot definitions, where composed (with params.yaml), are conf/'s task's."""
    _, cfg = compose_config(ROOT / "conf")
    expected = definitions(
        [*task_for(cfg.task).plots, IMPORTANCE], ROOT / cfg.paths.history, ROOT / cfg.paths.eval,
        ROOT / cfg.paths.plots, ROOT / cfg.paths.explain,
    )  # fmt: skip
    if (ROOT / cfg.paths.plots).is_file():
        assert (ROOT / cfg.paths.plots).read_text() == expected, "run `dvc repro` and commit it"


def test_a_projects_own_stage_declares_its_paths_beside_the_kits(tmp_path: Path) -> None:
    """README's "a stage of your own": its paths go in conf/paths/, as dvc.yaml's ${paths.*}."""
    out = tmp_path / "params.yaml"
    cfg = compose_stage(ROOT / "conf", out, tmp_path / "stamp", ["+paths.summary=reports/s.txt"])
    assert cfg.paths.summary == Path("reports/s.txt")
    assert load_config(out).paths.summary == Path("reports/s.txt")


def test_the_plot_definitions_must_be_a_dvc_file(tmp_path: Path) -> None:
    assert "named dvc.yaml only" in compose_error(tmp_path, "paths.plots=reports/plots.yaml")


TABLE = ["data=tabular", "task=regression"]


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "digits"),  # the demo's source is named so
        ([*TABLE, "data.source.path=data/raw/penguins.csv"], "penguins"),
        ([*TABLE, "data.source.path=data/raw/tables"], "tables"),  # a folder
        (
            [*TABLE, "data.source.path=data/raw/diamonds.parquet", "data.source.kind=parquet"],
            "diamonds",
        ),
        ([*TABLE, "data.source.path='data/raw/Données 2024.CSV.gz'"], "donnees-2024"),
        ([*TABLE, "data.source.path=data/raw/_.csv"], "model"),  # nothing left to name it
        ([*TABLE, "data.source.path=data/raw/penguins.csv", "project=birds"], "birds"),
    ],
)
def test_a_project_that_sets_no_name_is_named_after_its_data(
    overrides: list[str], name: str
) -> None:
    _, cfg = compose_config(CONF, overrides)
    assert (cfg.project, cfg.tracking.experiment, cfg.tracking.registered_model) == (name,) * 3


def test_the_serving_image_is_named_after_the_data(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    compose_stage(
        CONF,
        params,
        tmp_path / "stamp",
        [*TABLE, "data.source.path=data/raw/penguins.csv"],
    )
    assert yaml.safe_load(params.read_text())["project"] is None  # as `dvc exp run` writes it
    assert serve_image_tag(DockerSettings(image_tag=None), params) == "penguins-serve:latest"


def compose_error(tmp_path: Path, *overrides: str) -> str:
    """The one-line error of composing conf/ with `overrides`; nothing may be written."""
    out = tmp_path / "params.yaml"
    with pytest.raises(PipelineError) as err:
        compose_stage(CONF, out, tmp_path / "stamp", list(overrides))
    assert "\n" not in str(err.value)
    assert not out.exists(), "nothing is written when validation fails"
    return str(err.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+evaluate.batchsize=3"], "evaluate.batchsize: unknown key; did you mean 'batch_size'?"),
        (["optimizer.lr=-0.1"], "optimizer.lr: Input should be greater than 0 (got -0.1)"),
        (["trainer.max_epochs=0"], "trainer.max_epochs: Input should be greater than or equal"),
        (["data.split.val=0.3"], "must sum to 1"),
        (["data.batch_size=many"], "data.batch_size: Input should be a valid integer"),
        (["explain.rows=0"], "explain.rows: Input should be greater than or equal to 1 (got 0)"),
        (["explain.shown=0"], "explain.shown: Input should be greater than or equal to 1"),
        (["explain.batch_size=0"], "explain.batch_size: Input should be greater than or equal"),
        (["data.source.kind=xlsx"], "'digits', 'csv', 'parquet'"),
        # data.source names a Source class, which says the tasks it feeds and takes its keys
        (["task=regression"], "Digits feeds task classification, not regression"),
        (
            ["data.source._target_=myproject.models.nets.MLP", "~data.source.kind"],
            "is not a mlpipeline.data.sources.Source class",
        ),
        (["data.source.kind=csv"], "data.source.path: required key is missing"),
        (["data=tabular", "data.source.label="], "data.source.label: String should have at least"),
        (["data=tabular", "+data.source.sheet=1"], "TableFile takes no argument 'sheet'"),
        (["data.source._target_=os.system"], "is not in a package a _target_ may name"),
        (["model=transformer"], "available options in 'model': cnn, mlp"),
        (
            ["+trainer.max_epoch=3"],
            "trainer.max_epoch: lightning.pytorch.Trainer takes no argument",
        ),
        # the values of `_target_` sections, against the class's annotations
        (["model.dropout=1.5"], "model.dropout: Input should be less than 1 (got 1.5)"),
        (["model.dropout=1.5"], "takes dropout: float >= 0 and < 1"),
        (
            ["model=mlp", "model.hidden=128"],
            "model.hidden: Input should be an instance of Sequence",
        ),
        (["model=mlp", "model.hidden=128"], "takes hidden: Sequence[int >= 1]"),
        (["model.channels=[16,0]"], "model.channels.1: Input should be greater than or equal to 1"),
        (["trainer.precision=32bit"], "trainer.precision"),
        # a misspelt override: the closest key and the valid ones, not Hydra's `+key` advice
        (
            ["optimizer.learning_rate=0.01"],
            "optimizer.learning_rate: unknown key; did you mean 'lr'?",
        ),
        (["optimizer.learning_rate=0.01"], "valid: amsgrad, betas,"),
        (["data.batchsize=3"], "data.batchsize: unknown key; did you mean 'batch_size'?"),
        (["optimizer.betas=[0.9,0.99]"], "add it with +optimizer.betas=<value>"),
    ],
)
def test_bad_config_fails_in_one_line_naming_the_key(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    message = compose_error(tmp_path, *overrides)
    assert expected in message
    assert "To append to your config" not in message


def test_a_misspelt_key_in_a_conf_file_suggests_the_right_one(tmp_path: Path) -> None:
    import shutil

    conf = Path(shutil.copytree(CONF, tmp_path / "conf"))
    adamw = conf / "optimizer/adamw.yaml"
    adamw.write_text(adamw.read_text().replace("lr:", "lr_rate:"))
    with pytest.raises(PipelineError) as err:
        compose_config(conf)
    assert "optimizer.lr_rate: unknown key; did you mean 'lr'?" in str(err.value)


def test_misspelt_target_argument_suggests_the_right_one(make_cfg) -> None:
    raw = make_cfg().dump()
    raw["optimizer"]["weight_decya"] = 0.1
    with pytest.raises(PipelineError, match="did you mean 'weight_decay'"):
        check_targets(validate_config(raw))


def test_further_callbacks_are_checked_like_the_others(make_cfg) -> None:
    cfg = make_cfg("+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor")
    check_targets(cfg)
    assert "callbacks.lr_monitor" in cfg.targets()
    raw = cfg.dump()
    raw["callbacks"]["lr_monitor"]["logging_intervall"] = "epoch"
    with pytest.raises(PipelineError, match="did you mean 'logging_interval'"):
        check_targets(validate_config(raw))


def test_a_passing_check_is_stamped_and_skipped_until_a_target_argument_or_source_changes(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[list[str]] = []
    real = target_checks.check_targets

    def spy(cfg, keys=None):
        checked.append(sorted(keys if keys is not None else cfg.targets()))
        real(cfg, keys)

    monkeypatch.setattr(target_checks, "check_targets", spy)
    stamps = tmp_path / "stamps"
    cfg = make_cfg()
    sections = sorted(cfg.targets())
    check_targets_once(cfg, stamps)
    check_targets_once(cfg, stamps)
    assert checked == [sections] and len(list(stamps.iterdir())) == len(sections)
    # one section's new value checks that section alone: torch's optimizer, not Lightning
    check_targets_once(make_cfg("optimizer.lr=0.01"), stamps)
    assert checked[-1] == ["optimizer"]
    # the project's own sources are part of the fingerprint: an edit of a network checks again
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    (tmp_path / "src/mynets").mkdir(parents=True)
    net = tmp_path / "src/mynets/__init__.py"
    net.write_text("from myproject.models.nets import MLP as Net\n")
    raw = make_cfg("model=mlp").dump()
    raw["model"]["_target_"] = "mynets.Net"
    raw["allowed_targets"].append("mynets")  # as a user adds their package in conf/config.yaml
    own = validate_config(raw)
    check_targets_once(own, stamps)
    assert "model" in checked[-1]
    count = len(checked)
    check_targets_once(own, stamps)
    assert len(checked) == count
    net.write_text("from myproject.models.nets import MLP as Net  # edited\n")
    check_targets_once(own, stamps)
    assert checked[-1] == ["model"]
    # an edit of the checks themselves checks every section again
    monkeypatch.setattr(target_checks, "_checker_sources", lambda: ["a stricter check"])
    check_targets_once(own, stamps)
    assert checked[-1] == sorted(own.targets())
    # a failing check leaves no stamp: it fails again, in one line
    raw = own.dump()
    raw["optimizer"]["weight_decya"] = 0.1
    stamped = len(list(stamps.iterdir()))
    for _ in range(2):
        with pytest.raises(PipelineError, match="did you mean 'weight_decay'"):
            check_targets_once(validate_config(raw), stamps)
    assert checked[-2:] == [["optimizer"], ["optimizer"]]
    assert len(list(stamps.iterdir())) == stamped
    # nowhere to write the stamps (a read-only home): the check still runs, and passes
    (tmp_path / "a-file").touch()
    check_targets_once(cfg, tmp_path / "a-file" / "stamps")
    assert checked[-1] == sections


def test_missing_params_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"mlpipeline\.stages\.compose"):
        load_config(tmp_path / "params.yaml")


def test_paths_rebase_under_a_directory_except_the_raw_data(tmp_path: Path) -> None:
    paths = compose_config(CONF)[1].paths
    moved = paths.rebased(tmp_path)
    assert moved.raw == paths.raw
    assert moved.model == tmp_path / paths.model and moved.history == tmp_path / paths.history
    assert set(yaml.safe_load((ROOT / "conf/paths/default.yaml").read_text())) == set(
        paths.model_dump()
    )


def test_compose_shows_changed_values_as_params_yaml_spells_them(tmp_path: Path) -> None:
    old = tmp_path / "params.yaml"
    old.write_text("project: digits\ntrainer: {deterministic: true}\n", encoding="utf-8")
    new = "project: null\ntrainer: {deterministic: false}\ncv: {folds: 3}\n"
    assert changes(old, new) == [
        "cv.folds: (absent) -> 3",
        "project: digits -> null",
        "trainer.deterministic: true -> false",
    ]
