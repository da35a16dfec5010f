"""The package's layers: stages on top, importing no other stage; the service and the ops
tooling apart; the shared core below everything."""

from __future__ import annotations

from helpers import ROOT
from imports import KIT, SRC, imports, module_name

PACKAGE = KIT / "mlpipeline"
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


# The project's own code: what a user of the template reads and edits (README, "Where to
# change what"). It stays small; the machinery belongs in the kit.
PROJECT = SRC / "myproject"
PROJECT_LINES = 1500


def test_the_projects_own_code_is_small() -> None:
    files = sorted(PROJECT.rglob("*.py"))
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in files}
    print("\n".join(f"{n:5d}  {name}" for name, n in lines.items()))
    assert {"src/myproject/models/nets.py", "src/myproject/models/module.py"} <= lines.keys()
    assert sum(lines.values()) <= PROJECT_LINES, lines


def test_the_project_imports_only_the_kits_public_api() -> None:
    import mlpipeline

    public = {"mlpipeline", *(f"mlpipeline.{name}" for name in mlpipeline.__all__)}
    found = [
        f"{module_name(path)} imports {name}"
        for path in PROJECT.rglob("*.py")
        for name in imports(path)
        if name.split(".")[0] == "mlpipeline" and name not in public
    ]
    assert not found, f"import these from `mlpipeline` (its __all__) instead: {found}"


def test_every_row_of_where_to_change_what_points_outside_the_kit() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Where to change what\n", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in table.splitlines() if r.startswith("| ")][2:]
    assert len(rows) >= 8
    into_kit = [r.split(" | ")[0] for r in rows if "kit/" in r.split(" | ")[1]]
    assert not into_kit


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
