"""The package's layers: stages on top, importing no other stage; the service and the ops
tooling apart; the shared core below everything."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
from helpers import ROOT
from imports import KIT, SRC, import_cycles, imports, module_file, module_name

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
    for path in STAGES:
        assert stages[path.stem]["cmd"] == f"python -m mlpipeline.stages.{path.stem}"
    # any other stage is the project's own (README: a stage of your own), run from src/
    own = {name: s["cmd"] for name, s in stages.items() if name not in {p.stem for p in STAGES}}
    assert all(cmd.startswith("python -m myproject.") for cmd in own.values()), own


def test_no_stage_imports_another() -> None:
    crossed = [
        f"{path.stem} imports {name}"
        for path in STAGES
        for name in mlpipeline_imports(path)
        if name.startswith("mlpipeline.stages.")
    ]
    assert not crossed


def test_only_the_sweep_imports_a_stage() -> None:
    # the sweep's trial runs the stages' own functions on its paths: no second pipeline
    assert [
        n for n in importers_of("mlpipeline.stages") if not n.startswith("mlpipeline.sweep")
    ] == []


def test_no_import_cycles() -> None:
    cycles = import_cycles(PACKAGE)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_neither_the_pipeline_nor_the_service_imports_ops() -> None:
    assert importers_of("mlpipeline.ops") == []


def test_the_core_imports_no_layer_above_it() -> None:
    layers = ("stages", "data", "models", "serving", "sweep", "ops")
    # api.py is the top: what a project imports, from any layer
    core = [p for p in PACKAGE.glob("*.py") if p.name != "api.py"]
    core += list((PACKAGE / "config").glob("*.py"))
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
    from mlpipeline import api

    public = {"mlpipeline.api", *(f"mlpipeline.api.{name}" for name in api.__all__)}
    found = [
        f"{module_name(path)} imports {name}"
        for path in PROJECT.rglob("*.py")
        for name in imports(path)
        if name.split(".")[0] == "mlpipeline" and name not in public
    ]
    assert not found, f"import these from `mlpipeline.api` instead: {found}"


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


# what the environment tests import first: libraries that set variables of their own on import
# (scikit-learn's KMP_*, torch's, MLflow's telemetry session), none of them mlpipeline's doing
LIBRARIES = ["sklearn", "torch", "lightning", "mlflow", "onnxruntime"]
PACKAGES = sorted(module_name(p) for p in PACKAGE.rglob("__init__.py"))
# run in another environment (Airflow's) or import to preload a fork server: not imported here
NOT_HERE = (
    "mlpipeline.ops.orchestrate.container",
    "mlpipeline.ops.orchestrate.dag",
    "mlpipeline.ops.orchestrate.tasks",
    "mlpipeline.sweep.forkserver",
)


def environment_change(modules: list[str], libraries: list[str]) -> dict[str, list]:
    """The variables that importing `modules` (after `libraries`) sets, changes or removes,
    in a fresh interpreter."""
    code = (
        "import importlib, json, os, sys\n"
        "for name in sys.argv[2:]: importlib.import_module(name)\n"
        "before = dict(os.environ)\n"
        "for name in json.loads(sys.argv[1]): importlib.import_module(name)\n"
        "keys = before.keys() | os.environ.keys()\n"
        "print(json.dumps({k: [before.get(k), os.environ.get(k)] for k in sorted(keys)\n"
        "                  if before.get(k) != os.environ.get(k)}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(modules), *libraries],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_importing_the_packages_and_entry_points_changes_no_environment_variable() -> None:
    entry_points = [
        "mlpipeline.cli",
        "mlpipeline.serving.app",
        "mlpipeline.serving.__main__",
        "mlpipeline.sweep.__main__",
        "mlpipeline.stages.compose",
        "mlpipeline.stages.ingest",
    ]
    assert environment_change([*PACKAGES, *entry_points], ["sklearn"]) == {}


@pytest.mark.slow
def test_importing_any_module_changes_no_environment_variable() -> None:
    modules = sorted(
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if p.name != "__main__.py" and module_name(p) not in NOT_HERE
    )
    assert environment_change(modules, LIBRARIES) == {}


# stages that train nothing: Lightning's import alone costs seconds before any work
NOT_TRAINING = [
    "compose",
    "ingest",
    "prepare",
    "data_report",
    "features",
    "evaluate",
    "explain",
    "export",
    "profile",
    "register",
]


@pytest.mark.parametrize("stage", NOT_TRAINING)
def test_a_stage_that_does_not_train_does_not_import_lightning(stage: str) -> None:
    code = (
        "import sys\n"
        f"import mlpipeline.stages.{stage}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_the_kit_never_imports_the_project() -> None:
    found = [
        f"{module_name(path)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        for name in imports(path)
        if name.split(".")[0] == "myproject"
    ]
    assert not found


# What a function of the kit may import inside its body, each for the reason given; everything
# else is imported at the top of its module. A library here is imported at the top where every
# importer of the module needs it anyway; inside a function, the import block says why.
HEAVY = {
    "pyarrow": "a second to import; compose, crossval, evaluate and train read no table",
    "sklearn": "seconds to import (its estimators, model_selection)",
    "onnx": "seconds to import; only features, export and register build or read graphs",
    "skl2onnx": "seconds to import; only the features stage converts its preprocessing",
    "onnxruntime": "its import reads telemetry settings and costs start-up",
    "torch": "seconds to import; most stages never compute with it",
    "torchmetrics": "seconds to import; only evaluate computes metrics",
    "mlflow": "seconds to import; only register and the sweep log runs",
    "matplotlib": "a second to import; only evaluate renders plots",
    "captum": "a second to import (matplotlib with it); only the explain stage attributes",
    "dvc": "not installed in Airflow's environment, which imports the DAG's modules",
    "networkx": "DVC's dependency: as dvc",
    "kfp": "the Kubeflow SDK: installed only in its own environment (orchestration/kfp/)",
    "pydantic": "not in the Kubeflow SDK's environment, which imports ops/orchestrate/kfp.py",
    "numpy": "as pydantic: not in the Kubeflow SDK's environment",
    "timm": "seconds to import; only a timm network needs it, and the project imports the api",
    "torchvision": "a second to import; only augmentation needs it",
    "safetensors": "torch's companion: only reading a pretrained weights file needs it",
    "pyspark": "seconds to import, an optional extra: only the Spark engine (engine: spark)",
    "deltalake": "an optional extra (a Rust extension): only a Delta source (kind: delta)",
    # the kit's modules that import one of the above at their top
    "mlpipeline.data.features": "scikit-learn",
    "mlpipeline.models.modelfile": "torch",
    "mlpipeline.models.training": "Lightning",
    "mlpipeline.stages.train": "Lightning",
    "mlpipeline.tracking": "MLflow",
    "mlpipeline.config.schema": "pydantic",
    "mlpipeline.artifacts": "numpy",
    "mlpipeline.serving.app": "onnxruntime, after quiet_onnxruntime",
    "mlpipeline.serving.model": "onnxruntime, after quiet_onnxruntime",
    "mlpipeline.ops.orchestrate.container": "Airflow's Docker provider, installed only for it",
}


def top_level_imports(path) -> set[str]:
    """The modules `path` imports outside its functions (`from a import b`: a, and a.b)."""
    names: set[str] = set()
    todo = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, (ast.If, ast.Try)):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    return names


def is_heavy(name: str) -> bool:
    return any(name == h or name.startswith(f"{h}.") for h in HEAVY)


def function_import_blocks(tree: ast.AST) -> list[list[ast.stmt]]:
    """Runs of consecutive import statements inside function bodies (nested blocks too)."""
    blocks: list[list[ast.stmt]] = []

    def scan(body: list[ast.stmt], in_function: bool) -> None:
        run: list[ast.stmt] = []
        for stmt in [*body, None]:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) and in_function:
                run.append(stmt)
                continue
            if run:
                blocks.append(run)
                run = []
            if stmt is None:
                continue
            inner = in_function or isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            for field in ("body", "orelse", "finalbody"):
                if isinstance(getattr(stmt, field, None), list):
                    scan(getattr(stmt, field), inner)
            for handler in getattr(stmt, "handlers", []):
                scan(handler.body, inner)
            for case in getattr(stmt, "cases", []):
                scan(case.body, inner)

    scan(tree.body, False)  # type: ignore[attr-defined]
    return blocks


def test_imports_inside_functions_are_of_heavy_modules_and_say_why() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for block in function_import_blocks(ast.parse(text)):
            where = f"{path.relative_to(ROOT)}:{block[0].lineno}"
            for stmt in block:
                names = [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else []
                if isinstance(stmt, ast.ImportFrom):  # from a import b: a, or else a.b
                    module = (stmt.module or "") if stmt.level == 0 else "(relative import)"
                    names = (
                        [module] if is_heavy(module) else [f"{module}.{a.name}" for a in stmt.names]
                    )
                offenders += [f"{where}: {n} is not in HEAVY" for n in names if not is_heavy(n)]
            commented = lines[block[0].lineno - 2].lstrip().startswith("#") or any(
                "#" in line
                for stmt in block
                for line in lines[stmt.lineno - 1 : stmt.end_lineno]  # type: ignore[misc]
            )
            if not commented:
                offenders.append(f"{where}: no comment says why it is imported here")
    print("\n".join(offenders))
    assert not offenders, "move these to the module's top, or say why not:\n" + "\n".join(offenders)


def test_every_heavy_module_of_the_kit_imports_a_heavy_library() -> None:
    libraries = {h for h in HEAVY if not h.startswith("mlpipeline")} | {"lightning", "airflow"}
    light = []
    for name in (h for h in HEAVY if h.startswith("mlpipeline.")):
        tops = top_level_imports(module_file(name))
        if not {n.split(".")[0] for n in tops} & libraries and not any(map(is_heavy, tops)):
            light.append(name)
    assert not light, f"these import nothing heavy at their top: drop them from HEAVY: {light}"
