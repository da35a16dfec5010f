"""The service stands alone: nothing under kit/mlpipeline/serving/ imports torch, Lightning or
anything of mlpipeline outside that folder but the image decoder (mlpipeline/imaging.py, which
imports nothing of mlpipeline), and the folder and that file copied by themselves (as the
serving image copies them) serve a request, of a tensor model and of an image model, with torch
never imported."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, export_tiny_image_model, export_tiny_model

SERVING = ROOT / "kit/mlpipeline/serving"
IMAGING = ROOT / "kit/mlpipeline/imaging.py"  # the decoder ingest and the service share
# where the editable install finds the kit and the project; the image has neither
KIT_AND_SRC = (str(ROOT / "kit"), str(ROOT / "src"))
FORBIDDEN = {"torch", "lightning", "torchmetrics", "hydra", "mlflow", "dvc"}


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_serving_imports_nothing_heavy_and_nothing_else_of_mlpipeline() -> None:
    problems = []
    for path in [*sorted(SERVING.rglob("*.py")), IMAGING]:
        allowed = ("mlpipeline.serving", "mlpipeline.imaging") if path != IMAGING else ()
        for name in imported(path):
            top = name.split(".")[0]
            if top in FORBIDDEN:
                problems.append(f"{path.name} imports {name}")
            if top == "mlpipeline" and not name.startswith(allowed):
                problems.append(f"{path.name} imports {name}, outside {allowed}")
    assert not problems


# each kind of model, and a request it takes (in the code run below, `files` are its images)
REQUESTS = {
    "tensor": "json={'inputs': np.zeros((2, 1, 8, 8)).tolist()}",
    "image": "files=[('file', p.read_bytes()) for p in files]",
}


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_the_folder_alone_serves_without_torch(tmp_path: Path, kind: str) -> None:
    # as in the image: mlpipeline/serving/ and mlpipeline/imaging.py alone, mlpipeline a
    # namespace package
    app_dir = tmp_path / "app"
    shutil.copytree(
        SERVING, app_dir / "mlpipeline/serving", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(IMAGING, app_dir / "mlpipeline/imaging.py")
    export = export_tiny_image_model if kind == "image" else export_tiny_model
    model = export(tmp_path / "model")
    code = (
        "import sys\n"
        f"sys.path = [{str(app_dir)!r}] + [p for p in sys.path if p not in {KIT_AND_SRC!r}]\n"
        # the editable install's import hook would find the kit: the image has no install
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        "import numpy as np\n"
        "from fastapi.testclient import TestClient\n"
        "from mlpipeline.serving.settings import quiet_onnxruntime\n"
        "quiet_onnxruntime()  # as __main__ does first\n"
        "from mlpipeline.serving.app import create_app\n"
        "import mlpipeline\n"
        "assert mlpipeline.__file__ is None, mlpipeline.__file__  # the namespace package\n"
        "client = TestClient(create_app())\n"
        "from pathlib import Path\n"
        f"files = sorted(Path({str(model / 'files')!r}).glob('*'))\n"
        f"r = client.post('/predict', {REQUESTS[kind]})\n"
        "assert r.status_code == 200, r.text\n"
        "import os; assert os.environ['ORT_DISABLE_TELEMETRY'] == '1'  # no telemetry\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
        "assert not heavy, heavy\n" % (FORBIDDEN,)
    )
    env = {**os.environ, "MODEL_PATH": str(model / "model.onnx")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
