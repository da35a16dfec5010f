"""The LightningModule is the config's `module` section: the task's own by default, a user's
own by `module=<file>` (its package added to allowed_targets), and anything that is not a
LightningModule taking what training passes is refused in one line before training."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
from helpers import CONF, tiny, tiny_params

from mlpipeline.config import compose_config, validate_config
from mlpipeline.errors import PipelineError
from mlpipeline.stages.compose import compose_stage
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.stages.train import train

# a user's package: a plain LightningModule with label smoothing, and a class that is none
OWN_MODULES = """
import lightning as L
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


class Smoothed(L.LightningModule):
    def __init__(self, network, num_classes: int, optimizer, scheduler=None,
                 smoothing: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        self.val_acc = MulticlassAccuracy(num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.network(x), y, label_smoothing=self.hparams.smoothing)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.network(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", self.val_acc)

    def configure_optimizers(self):
        return instantiate(self.hparams.optimizer, params=self.parameters())


class NotAModule(nn.Module):
    def __init__(self, network, num_classes: int, optimizer, scheduler=None) -> None:
        super().__init__()
"""


@pytest.fixture
def own_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of conf/ that allows the package `mymodules` (importable from tmp_path/src) and
    names its classes in conf/module/smoothed.yaml and conf/module/plain.yaml."""
    (tmp_path / "src/mymodules").mkdir(parents=True)
    (tmp_path / "src/mymodules/__init__.py").write_text(OWN_MODULES)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    conf = Path(shutil.copytree(CONF, tmp_path / "conf"))
    config = conf / "config.yaml"
    text = config.read_text().replace("allowed_targets: [", "allowed_targets: [mymodules, ")
    config.write_text(text)
    (conf / "module/smoothed.yaml").write_text("_target_: mymodules.Smoothed\nsmoothing: 0.1\n")
    (conf / "module/plain.yaml").write_text("_target_: mymodules.NotAModule\n")
    (tmp_path / "raw").mkdir()
    return conf


class Seen(L.Callback):
    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.module = module


def test_a_users_own_lightning_module_trains_by_module_choice(own_conf: Path) -> None:
    cfg = tiny(compose_config(own_conf, ["module=smoothed", "trainer.max_epochs=2"])[1],
               own_conf.parent)  # fmt: skip
    assert cfg.module.target == "mymodules.Smoothed"
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    seen = Seen()
    result = train(cfg, callbacks=[seen])
    assert type(seen.module).__name__ == "Smoothed" and seen.module.hparams.smoothing == 0.1
    # the history holds what the module logs, whatever its class
    assert result.epochs == 2 and [set(row) for row in result.history] == 2 * [
        {"epoch", "train_loss", "val_loss", "val_acc", "lr"}
    ]
    assert cfg.paths.history.read_text().splitlines()[0].startswith("epoch,train_loss,")


def refusal(conf: Path, tmp_path: Path, *overrides: str) -> str:
    """The compose stage's one-line refusal of `overrides`; no params.yaml written."""
    out = tmp_path / "params.yaml"
    with pytest.raises(PipelineError) as err:
        compose_stage(conf, out, tmp_path / "stamp", list(overrides))
    assert "\n" not in str(err.value) and not out.exists()
    return str(err.value)


def test_a_target_that_is_no_lightning_module_is_refused_in_one_line(
    own_conf: Path, tmp_path: Path
) -> None:
    expected = (
        "module._target_: 'mymodules.NotAModule' is not a lightning.pytorch.LightningModule "
        "class, which module must name"
    )
    assert expected in refusal(own_conf, tmp_path, "module=plain")
    assert expected in refusal(own_conf, tmp_path, "module._target_=mymodules.NotAModule")
    # the train stage checks too, before any work: nothing trained, nothing written
    raw = compose_config(own_conf)[1].dump()
    raw["module"] = {"_target_": "mymodules.NotAModule"}
    cfg = tiny(validate_config(raw), tmp_path)
    with pytest.raises(PipelineError, match=expected):
        train(cfg)
    assert not cfg.paths.model.exists() and not cfg.paths.history.exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["module.smoothing=much"], "module.smoothing: Input should be a valid number"),
        (["+module.smoothin=0.2"], "module.smoothin: mymodules.Smoothed takes no argument"),
        # what training passes a classification module: a regression's takes no num_classes
        (
            ["module=regression"],
            "module._target_: myproject.models.module.Regressor takes no num_classes, which "
            "training passes a classification module",
        ),
        (["+module.num_classes=3"], "module.num_classes: mymodules.Smoothed takes no argument"),
    ],
)
def test_a_modules_arguments_are_checked_against_its_class(
    own_conf: Path, tmp_path: Path, overrides: list[str], expected: str
) -> None:
    chosen = [] if overrides[0].startswith("module=") else ["module=smoothed"]
    assert expected in refusal(own_conf, tmp_path, *chosen, *overrides)


def test_the_task_chooses_its_module() -> None:
    regression = ["task=regression", "data=tabular", "model=mlp"]
    assert compose_config(CONF)[1].module.target.endswith("module.Classifier")
    cfg = compose_config(CONF, regression)[1]
    assert cfg.task == "regression" and cfg.module.target.endswith("module.Regressor")


def test_the_history_records_metrics_the_module_logs_at_epoch_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the default classifier logs its training metrics in on_train_epoch_end, which Lightning
    # calls after the callbacks' hook of the same name
    _, cfg = tiny_params(tmp_path, "trainer.max_epochs=3", "callbacks.early_stopping=null")
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    result = train(cfg)
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    for row in result.history:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_f1"} <= set(row)
    losses = [row["train_loss"] for row in result.history]
    assert len(set(losses)) == 3  # each epoch's own, not the last one repeated
    epoch_lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(epoch_lines) == 3 and "train_acc" in epoch_lines[0]
