"""The package's layers: stages on top, importing no other stage; the service and the ops
tooling apart; the shared core below everything."""

from __future__ import annotations

from helpers import ROOT
from imports import SRC, imports, module_name

PACKAGE = SRC / "mlpipeline"
STAGES = sorted(p for p in (PACKAGE / "stages").glob("*.py") if p.name != "__init__.py")


def mlpipeline_imports(path) -> set[str]:
    return {n for n in imports(path) if n.split(".")[0] == "mlpipeline"}


def importers_of(prefix: str) -> list[str]:
    """Modules outside `prefix` that import something under it."""
    return sorted(
        f"{module_name(path)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        if not module_name(path).startswith(prefix)
        for name in mlpipeline_imports(path)
        if name == prefix or name.startswith(f"{prefix}.")
    )


def test_every_dvc_stage_has_its_module() -> None:
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert sorted(stages) == sorted(p.stem for p in STAGES)
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m mlpipeline.stages.{name}"


def test_no_stage_imports_another() -> None:
    crossed = [
        f"{path.stem} imports {name}"
        for path in STAGES
        for name in mlpipeline_imports(path)
        if name.startswith("mlpipeline.stages.")
    ]
    assert not crossed


def test_nothing_imports_a_stage() -> None:
    assert importers_of("mlpipeline.stages") == []


def test_neither_the_pipeline_nor_the_service_imports_ops() -> None:
    assert importers_of("mlpipeline.ops") == []


def test_the_core_imports_no_layer_above_it() -> None:
    layers = ("stages", "data", "models", "serving", "sweep", "ops")
    core = [p for p in PACKAGE.glob("*.py")] + list((PACKAGE / "config").glob("*.py"))
    upward = [
        f"{module_name(path)} imports {name}"
        for path in core
        for name in mlpipeline_imports(path)
        if name.split(".")[1] in layers
    ]
    assert not upward


def test_data_does_not_import_models_and_models_do_not_import_the_sweep() -> None:
    assert not [n for n in importers_of("mlpipeline.models") if n.startswith("mlpipeline.data")]
    assert importers_of("mlpipeline.sweep") == []


# what a stage would test to branch on the data's kind or the task: those differences live in
# the data source object (mlpipeline.data.sources.Source) and the task object
# (mlpipeline.config.tasks.Task), so a new kind or task is one class, not a branch per stage
KIND_OR_TASK_BRANCHES = (
    '"regression"',
    '"classification"',
    '"table"',
    '"tensor"',
    '"records"',
    '"numeric"',
    '"categorical"',
    '"digits"',
    ".kind ==",
    ".kind !=",
    '["kind"]',
    'get("kind")',
    "task ==",
    "task !=",
    "isinstance(data, Table)",
    "Regressor",
)


def test_no_stage_branches_on_the_data_kind_or_the_task() -> None:
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in STAGES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(branch in line for branch in KIND_OR_TASK_BRANCHES)
    ]
    assert not found, "move these into the Source or Task classes:\n" + "\n".join(found)
