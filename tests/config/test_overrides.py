"""What overrides and conf/ may name: `_target_`s only in conf/config.yaml's `allowed_targets`,
no resolver in an override (the environment never reaches params.yaml), and one-line errors
for a broken conf file or a target that cannot be imported."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import CONF, ROOT, one_line_error, run

from mlpipeline.config import check_targets, compose_config, instantiate, validate_config
from mlpipeline.errors import PipelineError
from mlpipeline.stages.compose import compose_stage

ALLOWED = (
    "allowed_targets: myproject, mlpipeline, torch, lightning, torchmetrics, timm, torchvision"
)
COMPOSE = [sys.executable, "-m", "mlpipeline.stages.compose"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with a copy of conf/, where the compose stage runs."""
    shutil.copytree(CONF, tmp_path / "conf")
    return tmp_path


def refusal(workdir: Path, *overrides: str) -> str:
    """compose_stage's one-line refusal of `overrides`; nothing may be written."""
    out, stamp = workdir / "params.yaml", workdir / "stamp"
    with pytest.raises(PipelineError) as err:
        compose_stage(workdir / "conf", out, stamp, list(overrides))
    assert "\n" not in str(err.value)
    assert not out.exists() and not stamp.exists()
    return str(err.value)


def test_an_override_naming_a_callable_outside_the_allowed_packages_stops_compose(
    workdir: Path,
) -> None:
    victim = workdir / "victim.txt"
    victim.write_text("keep me")
    cmd = [
        *COMPOSE,
        "+callbacks.x._target_=builtins.open",
        f"+callbacks.x.file={victim}",
        "+callbacks.x.mode=w",
    ]
    line = one_line_error(run(cmd, workdir, check=False), "callbacks.x._target_", "'builtins.open'")
    assert line == (
        "error: callbacks.x._target_: 'builtins.open' is not in a package a _target_ may name "
        f"({ALLOWED}); to use your own package, add it to conf/config.yaml's allowed_targets "
        "(an override cannot)"
    )
    assert victim.read_text() == "keep me"
    assert not (workdir / "params.yaml").exists() and not (workdir / "data").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["+callbacks.x={_target_: builtins.open, file: f, mode: w}"],  # a whole section
        ["+callbacks.x._target_=builtins.print,builtins.open"],  # a sweep's choices
        ["model._target_=torchaudio.models.wav2letter"],  # `torch` is not `torchaudio`
        ["model._target_=os.system"],
        ["+hydra.callbacks.x._target_=builtins.exec"],  # Hydra's own config too
    ],
)
def test_every_form_of_a_forbidden_target_in_an_override_is_refused(
    workdir: Path, overrides: list[str]
) -> None:
    assert "is not in a package a _target_ may name" in refusal(workdir, *overrides)


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        # functions of an allowed package that write a file or fetch and run code
        (["+callbacks.x._target_=torch.save", "+callbacks.x.obj=1", "+callbacks.x.f={victim}"],
         "lightning.pytorch.Callback"),
        (["optimizer._target_=torch.hub.load", "+optimizer.repo_or_dir=x"],
         "torch.optim.Optimizer"),
        (["model._target_=torch.nn.functional.relu"], "torch.nn.Module"),
        (["scheduler._target_=torch.optim.SGD"], "torch.optim.lr_scheduler.LRScheduler"),
    ],
)  # fmt: skip
def test_a_section_names_a_class_of_its_kind_not_any_callable_of_an_allowed_package(
    workdir: Path, overrides: list[str], kind: str
) -> None:
    victim = workdir / "victim.txt"
    victim.write_text("keep me")
    message = refusal(workdir, *(o.format(victim=victim) for o in overrides))
    assert f"is not a {kind} class" in message
    assert victim.read_text() == "keep me"


def test_no_override_widens_the_allow_list(workdir: Path) -> None:
    for override in ("allowed_targets=[builtins]", "+allowed_targets=[os]", "~allowed_targets"):
        assert "allowed_targets cannot be overridden; edit it in conf/config.yaml" in refusal(
            workdir, override
        )


def test_the_allow_list_is_conf_config_yamls_and_applies_to_conf_files(workdir: Path) -> None:
    # a conf file naming a package outside the list stops composition, in one line
    adamw = workdir / "conf/optimizer/adamw.yaml"
    adamw.write_text(adamw.read_text().replace("torch.optim.AdamW", "mypackage.optim.Fast"))
    with pytest.raises(PipelineError, match=r"optimizer\._target_: 'mypackage\.optim\.Fast' is"):
        compose_config(workdir / "conf")
    # another conf file cannot widen it; conf/config.yaml can
    preset = workdir / "conf/experiment/wide.yaml"
    preset.write_text("# @package _global_\nallowed_targets: [mlpipeline, torch, mypackage]\n")
    with pytest.raises(PipelineError, match=r"set it in conf/config\.yaml only"):
        compose_config(workdir / "conf", ["experiment=wide"])
    config = workdir / "conf/config.yaml"
    config.write_text(config.read_text().replace("torchvision]", "torchvision, mypackage]"))
    assert compose_config(workdir / "conf")[1].optimizer.target == "mypackage.optim.Fast"


def test_an_override_that_reads_the_environment_is_refused_and_never_written(
    workdir: Path,
) -> None:
    params = workdir / "params.yaml"
    params.write_text("as it was\n")
    override = "tracking.experiment=${oc.env:HOME}"
    line = one_line_error(run([*COMPOSE, override], workdir, check=False), "oc.env")
    assert line == (
        f"error: {override}: calls the resolver oc.env; an override may "
        "refer to another key (${path.to.key}) but call no resolver (oc.env would copy the "
        "environment into params.yaml); set such a value in conf/"
    )
    assert params.read_text() == "as it was\n"
    assert os.environ["HOME"] not in params.read_text()


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("tracking.experiment='${oc.env:HOME}'", "calls the resolver oc.env"),
        ("""tracking.experiment='x${oc.decode:"${oc.env:HOME}"}'""", "calls the resolver oc."),
        ("tracking.experiment='${${oc.env:KEY}}'", "calls the resolver oc.env"),
        ("tracking.experiment=${hydra:runtime.cwd}", "calls the resolver hydra"),
        ("tracking.experiment=${now:%Y}", "calls the resolver now"),
        ("+tracking.x={a: [1, '${oc.env:HOME}']}", "calls the resolver oc.env"),
        # an escaped one reaches params.yaml as text, which Hydra's instantiate resolves
        ("callbacks.early_stopping.monitor=\\${oc.env:HOME}", "escapes an interpolation"),
        ("tracking.experiment='${oc.env:HOME'", "not a valid interpolation"),
    ],
)
def test_no_resolver_in_an_override(workdir: Path, override: str, problem: str) -> None:
    assert problem in refusal(workdir, override)


def test_an_override_may_refer_to_another_key(workdir: Path) -> None:
    cfg = compose_config(workdir / "conf", ["optimizer.weight_decay=${optimizer.lr}"])[1]
    assert cfg.optimizer.kwargs()["weight_decay"] == cfg.optimizer.lr


def test_an_interpolation_left_as_text_in_params_yaml_is_refused(make_cfg) -> None:
    # what `dvc exp run -S 'key=\${oc.env:X}'` leaves: DVC composes, the compose stage checks
    raw = make_cfg().dump()
    raw["callbacks"]["early_stopping"]["monitor"] = "${oc.env:HOME}"
    with pytest.raises(PipelineError, match="holds an interpolation as text"):
        check_targets(validate_config(raw))


def test_a_yaml_syntax_error_in_a_conf_file_is_one_line_with_file_line_and_column(
    workdir: Path,
) -> None:
    adamw = workdir / "conf/optimizer/adamw.yaml"
    lines = adamw.read_text().splitlines()
    adamw.write_text("\n".join([*lines, "betas: [0.9", "eps: 1"]) + "\n")
    line = one_line_error(run(COMPOSE, workdir, check=False), "invalid YAML")
    assert line == (
        f"error: conf/optimizer/adamw.yaml:{len(lines) + 2}:4: invalid YAML: expected ',' or "
        f"']', but got ':' (while parsing a flow sequence at line {len(lines) + 1}, column 8)"
    )
    config = workdir / "conf/config.yaml"
    config.write_text(config.read_text() + "oops: [\n")
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(config))}:\d+:\d+: invalid YAML: "):
        compose_config(workdir / "conf")


def test_a_target_that_cannot_be_imported_or_is_no_class_is_one_line(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    (tmp_path / "src/brokennets").mkdir(parents=True)
    (tmp_path / "src/brokennets/__init__.py").write_text("raise RuntimeError('no GPU here')\n")
    raw = make_cfg().dump()
    raw["allowed_targets"] = [*raw["allowed_targets"], "brokennets"]
    for target, message in [
        ("brokennets.Net", "model._target_: cannot import 'brokennets.Net': RuntimeError: no GPU"),
        ("torch.pi", "model._target_: 'torch.pi' is not a"),
    ]:
        raw["model"]["_target_"] = target
        with pytest.raises(PipelineError) as err:
            check_targets(validate_config(raw))
        assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # a target Hydra's own policy blocks, were conf/ to allow its package
        ({"_target_": "os.remove", "path": "x"}, "k: Target 'os.remove' is blocklisted"),
        (
            {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "mode": "sideways"},
            "k: Error in call to target 'lightning.pytorch.callbacks.early_stopping.EarlyStopping'",
        ),
    ],
)
def test_a_target_that_cannot_be_instantiated_is_one_line(spec: dict, message: str) -> None:
    with pytest.raises(PipelineError) as err:
        instantiate(spec, "k")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


DVC_PLUGIN = ROOT / ".dvc/plugins/hydra_plugins/mlpipeline_overrides.py"


@pytest.fixture
def dvc_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], Any]:
    """Load the Hydra plugin module that DVC loads before `dvc exp run -S` composes, and
    return a composition of conf/ as DVC's (hydra.compose); Hydra's loader is restored after."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", ConfigLoaderImpl.load_configuration)

    def composed(overrides: list[str]) -> Any:
        runpy.run_path(str(DVC_PLUGIN))
        with initialize_config_dir(str(CONF), version_base=None):
            return compose(config_name="config", overrides=overrides)

    return composed


def test_dvcs_own_composition_refuses_a_resolver_in_an_override(dvc_plugin) -> None:
    from dvc.exceptions import InvalidArgumentError

    assert dvc_plugin(["optimizer.lr=0.02"]).optimizer.lr == 0.02
    with pytest.raises(InvalidArgumentError) as err:
        dvc_plugin(["tracking.experiment=${oc.env:HOME}", "+callbacks.x._target_=builtins.open"])
    assert str(err.value).startswith("tracking.experiment=${oc.env:HOME}: calls the resolver")
    assert "'builtins.open' is not in a package" in str(err.value)
    assert "\n" not in str(err.value)


def test_dvcs_composition_is_refused_when_the_guard_cannot_be_imported(
    dvc_plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a dvc installed apart from the project: unchecked overrides would reach params.yaml
    from dvc.exceptions import InvalidArgumentError

    monkeypatch.setitem(sys.modules, "mlpipeline.config.guard", None)
    with pytest.raises(
        InvalidArgumentError, match=r"-S overrides cannot be checked .*make install"
    ):
        dvc_plugin(["optimizer.lr=0.02"])
