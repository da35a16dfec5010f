"""`make drift DATA=...` (mlpipeline.ops.drift): a batch of records scored against the
reference profile with serving.profile's PSI, exit 1 above the critical threshold, one line
for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pv
import pytest
from helpers import ROOT, demo_params, make_command, mixed_table, one_line_error, run

from mlpipeline.data.features import number_values, text_values
from mlpipeline.serving import profile as bins


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The profile of 2000 training rows of mixed_table, built as the profile stage does."""
    path = tmp_path_factory.mktemp("profile") / "training.csv"
    mixed_table(2000).to_csv(path, index=False)
    table = pv.read_csv(path, convert_options=pv.ConvertOptions(strings_can_be_null=True))
    columns = [
        bins.numeric_column("width", number_values(table.column("width")), 10),
        bins.numeric_column("count", number_values(table.column("count")), 10),
        bins.categorical_column("color", text_values(table.column("color")), 20, 1000),
        bins.categorical_column("flag", text_values(table.column("flag")), 20, 1000),
    ]
    profile = bins.Profile(
        input="records",
        rows=2000,
        columns=columns,
        prediction=bins.ClassPrediction(classes=["a", "b"], shares=[0.5, 0.5]),
    )
    out = path.with_name("profile.json")
    out.write_text(profile.model_dump_json(exclude_none=True), encoding="utf-8")
    return out


def check(data: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlpipeline.ops.drift", str(data), "--profile", str(profile),
         "--params", str(demo_params())],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def scores(proc: subprocess.CompletedProcess) -> dict[str, tuple[float, str]]:
    found = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) == 3:
            found[parts[0]] = (float(parts[1]), parts[2])
    return found


def test_records_like_the_training_data_pass(reference: Path, tmp_path: Path) -> None:
    mixed_table(1500, seed=1).to_csv(tmp_path / "new.csv", index=False)
    proc = check(tmp_path / "new.csv", reference)
    assert proc.returncode == 0, proc.stderr
    got = scores(proc)
    assert set(got) == {"width", "count", "color", "flag"}
    assert all(psi < 0.1 and status == "ok" for psi, status in got.values()), got
    assert "drift of 1500 rows" in proc.stdout


def test_a_shifted_column_fails_the_check_and_only_that_column_is_critical(
    reference: Path, tmp_path: Path
) -> None:
    frame = mixed_table(1500, seed=1)
    frame["width"] = frame["width"] * 1.5  # the same values, half again as large
    frame.to_csv(tmp_path / "new.csv", index=False)
    proc = check(tmp_path / "new.csv", reference)
    got = scores(proc)
    assert got["width"][1] == "critical" and got["width"][0] > 0.25
    assert all(status == "ok" for name, (_, status) in got.items() if name != "width")
    one_line_error(proc, "drift above 0.25 in ['width']")
    # the same score as serving.profile.psi of the batch's counts
    table = pv.read_csv(tmp_path / "new.csv")
    profile = bins.read_profile(reference)
    width = next(c for c in profile.columns if c.name == "width")
    counts = bins.NumericBinner(width).counts(number_values(table.column("width")))
    assert got["width"][0] == pytest.approx(bins.psi(counts, width.shares, 1e-4), abs=5e-5)


def test_bad_input_is_one_line(reference: Path, tmp_path: Path) -> None:
    mixed_table(50).drop(columns="color").to_csv(tmp_path / "fewer.csv", index=False)
    one_line_error(
        check(tmp_path / "fewer.csv", reference), "lacks the model's input columns ['color']"
    )
    np.save(tmp_path / "x.npy", np.zeros((3, 4)))
    one_line_error(check(tmp_path / "x.npy", reference), "the model takes records")
    one_line_error(check(tmp_path / "none.csv", reference), "none.csv not found")
    one_line_error(check(tmp_path / "fewer.csv", tmp_path / "no.json"), "drift profile not found")
    (tmp_path / "text.csv").write_text("width,count,color,flag\nwide,1,red,true\n")
    one_line_error(check(tmp_path / "text.csv", reference), "column width is numeric")


def test_make_drift_without_data_says_how_to_call_it() -> None:
    proc = run(make_command("drift"), ROOT, check=False)
    assert proc.returncode != 0 and "make drift DATA=new.csv" in proc.stderr
