"""The pull-request report: what a change did to the pipeline, against a base git ref.

    python -m mlpipeline.ops.report --base origin/main --out reports/pr

Run it after `dvc repro`. It writes `report.md` and the plots it shows into the output
directory: `dvc params diff` and `dvc metrics diff` against the base as Markdown tables, the
task's plots as PNGs (those the evaluate stage rendered into `paths.figures`, titled as the
task declares them), the data report's and the attributions' changes against the base's (tables
and PNGs, mlpipeline.ops.report_sections), the data and model hashes of the base and of this
change (from `dvc.lock` and the model card), and whether the `dvc.lock` committed at HEAD
matches what was reproduced. The base's files are read from git, this change's from the
working tree.
The directory is replaced as a whole, atomically, and ignores itself in git.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlpipeline.artifacts import atomic_path, read_json
from mlpipeline.config import Config, load_config, task_for
from mlpipeline.data.report import REPORT_JSON
from mlpipeline.errors import PipelineError, exit_on_error, first_line
from mlpipeline.git import git
from mlpipeline.ops.report_sections import Side, attributions_section, data_section

REPORT_NAME = "report.md"
CARD_HASHES = ("data", "model", "onnx")


@dataclass(frozen=True)
class LockCheck:
    """How the working-tree dvc.lock (what was reproduced) compares with the one at HEAD."""

    committed: bool
    matches: bool
    differing_stages: tuple[str, ...]


def _git(repo: Path, *args: str) -> str:
    try:
        return git(repo, *args)
    except (OSError, subprocess.CalledProcessError) as err:
        reason = (getattr(err, "stderr", "") or "").strip().splitlines() or [str(err)]
        raise PipelineError(f"git {' '.join(args)} failed in {repo}: {reason[-1]}") from None


def _git_file(repo: Path, rev: str, path: str) -> str | None:
    """The text of `path` at `rev`, or None when that commit has no such file."""
    try:
        return git(repo, "show", f"{rev}:{path}", strip=False)
    except (OSError, subprocess.CalledProcessError):
        return None


def resolve_base(repo: Path, base: str) -> str:
    """The commit `base` names; PipelineError naming the fix when git does not know it."""
    if not (repo / ".git").exists():
        raise PipelineError(f"{repo} is not a git repository: run from the repository root")
    if not base or base.startswith("-"):
        raise PipelineError(f"base ref {base!r} is not a git ref name: pass one like origin/main")
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    except (OSError, subprocess.CalledProcessError):
        raise PipelineError(
            f"base ref {base!r} is not a commit of this repository: fetch it first "
            "(git fetch origin <branch>, or actions/checkout with fetch-depth: 0)"
        ) from None


def dvc_table(repo: Path, what: str, base: str, leave_out: str | None = None) -> str | None:
    """`dvc <what> diff <base> --md`: the Markdown table, or None when nothing changed; rows
    of the file `leave_out` (a section of their own shows them) are left out."""
    # the dvc of this interpreter, whatever PATH says
    cmd = [sys.executable, "-m", "dvc", what, "diff", base, "--md"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise PipelineError(f"dvc {what} diff {base} failed: {lines[-1].strip()}")
    rows = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("|") and line.strip("| ").split(" ", 1)[0] != leave_out
    ]
    # a header and its rule line alone mean no differences
    return "\n".join(rows) if len(rows) > 2 else None


def check_lock(repo: Path) -> LockCheck:
    """Compare the reproduced dvc.lock with the committed one, naming the stages that differ."""
    current_path = repo / "dvc.lock"
    if not current_path.is_file():
        raise PipelineError(f"{current_path} not found: run the pipeline (dvc repro) first")
    current = current_path.read_text(encoding="utf-8")
    committed = _git_file(repo, "HEAD", "dvc.lock")
    if committed is None:
        return LockCheck(committed=False, matches=False, differing_stages=())
    if committed == current:
        return LockCheck(committed=True, matches=True, differing_stages=())
    old = _lock_stages(committed)
    new = _lock_stages(current)
    differing = tuple(
        sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    )
    return LockCheck(committed=True, matches=False, differing_stages=differing)


def _lock_stages(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    return dict(data.get("stages") or {}) if isinstance(data, dict) else {}


def lock_outputs(text: str | None) -> dict[str, str]:
    """Output path -> md5 for every stage output recorded in a dvc.lock text."""
    outputs: dict[str, str] = {}
    for stage in _lock_stages(text or "").values():
        for out in stage.get("outs") or []:
            if isinstance(out, dict) and "path" in out:
                outputs[out["path"]] = str(out.get("md5", "?"))
    return outputs


def _config(repo: Path) -> Config:
    """params.yaml: the task, and where the figures and the model card are."""
    try:
        return load_config(repo / "params.yaml")
    except PipelineError as err:
        raise PipelineError(f"cannot read the pipeline's paths: {err}") from None


def read_side(repo: Path, rev: str | None, path: Path) -> Side:
    """A JSON file of the working tree (`rev` None) or of commit `rev`; its data is None when
    there is no such file. A commit's unreadable file counts as absent (the report of this
    change must not fail for it); the working tree's is a PipelineError."""
    if rev is not None:
        text = _git_file(repo, rev, path.as_posix())
        try:
            data = json.loads(text) if text is not None else None
        except ValueError:
            data = None
        return Side(data if isinstance(data, dict) else None, rev[:7])
    full = repo / path
    if not full.is_file():
        return Side(None, "this change")
    return Side(_json_object(full, "a JSON object"), "this change")


def _json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in the pipeline's output `path` (`what` it should be, for the error)."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise PipelineError(f"cannot read {path}: {first_line(err)}; re-run dvc repro") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path} is not {what}: re-run dvc repro")
    return data


def _read_card(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the pipeline (dvc repro) first")
    return _json_object(path, "a model card (a JSON object)")


def _hash_table(base: str, base_lock: str | None, head_lock: str, card: dict[str, Any]) -> str:
    rows = ["| output | base | this change |", "|---|---|---|"]
    old, new = lock_outputs(base_lock), lock_outputs(head_lock)
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path, "—"), new.get(path, "—")
        mark = "" if before == after else " (changed)"
        rows.append(f"| `{path}` | `{before}` | `{after}`{mark} |")
    hashes = card.get("hashes") or {}
    card_lines = [f"- {name}: `{hashes.get(name, '—')}`" for name in CARD_HASHES]
    return "\n".join(
        [
            f"Stage outputs recorded in `dvc.lock` (base: `{base}`):",
            "",
            *rows,
            "",
            f"Model card, version `{card.get('version', '—')}`: the served model's hashes",
            "",
            *card_lines,
        ]
    )


def _lock_section(check: LockCheck) -> str:
    if not check.committed:
        return (
            "⚠️ HEAD has no committed `dvc.lock`: commit the one `dvc repro` writes so the "
            "change records its data and model hashes."
        )
    if check.matches:
        return "✅ The committed `dvc.lock` matches what was reproduced here."
    stages = ", ".join(f"`{name}`" for name in check.differing_stages) or "formatting only"
    return (
        f"⚠️ The committed `dvc.lock` differs from what was reproduced here (stages: {stages}). "
        "Run `dvc repro` and commit `dvc.lock` (or pull the outputs with `dvc pull`) so that "
        "the pull request records what it trains."
    )


def build_report(repo: Path, base: str, out_dir: Path) -> Path:
    """Write the report of the working tree of `repo` against git ref `base` into `out_dir`.

    `out_dir` is replaced as a whole (written beside it, then renamed), so a failure leaves the
    previous report in place. Returns the path of report.md.
    """
    repo = Path(repo).resolve()
    out_dir = Path(out_dir)
    if not out_dir.is_absolute():
        out_dir = repo / out_dir
    base_commit = resolve_base(repo, base)
    head = _git(repo, "rev-parse", "--short", "HEAD").strip()
    config = _config(repo)
    paths = config.paths.rebased(repo)
    card = _read_card(paths.card)
    lock = check_lock(repo)
    # relative: the base's files are read from git
    data_report = config.paths.data_report / REPORT_JSON
    attributions = config.paths.attributions
    params = dvc_table(repo, "params", base)
    metrics = dvc_table(repo, "metrics", base, leave_out=attributions.as_posix())
    head_lock = (repo / "dvc.lock").read_text(encoding="utf-8")
    base_lock = _git_file(repo, base_commit, "dvc.lock")

    with atomic_path(out_dir, is_dir=True) as tmp:
        plots = []
        for plot in task_for(config.task).plots:
            figure = paths.figures / f"{plot.name}.png"
            if not figure.is_file():
                raise PipelineError(
                    f"{figure} not found: run the pipeline (dvc repro) before the report"
                )
            shutil.copyfile(figure, tmp / figure.name)
            plots.append(f"![{plot.title}]({figure.name})")
        sides = [
            (read_side(repo, base_commit, p), read_side(repo, None, p))
            for p in (data_report, attributions)
        ]
        data = data_section(*sides[0], data_report.as_posix(), tmp, config.monitoring.drift)
        importance = attributions_section(*sides[1], attributions.as_posix(), tmp)
        text = "\n".join(
            [
                f"# Pipeline report: `{head}` against `{base}` (`{base_commit[:7]}`)",
                "",
                _lock_section(lock),
                "",
                f"## Parameters (`dvc params diff {base}`)",
                "",
                params or f"No parameter differs from `{base}`.",
                "",
                f"## Metrics (`dvc metrics diff {base}`)",
                "",
                metrics or f"No metric differs from `{base}` (attributions: their section).",
                "",
                data,
                "",
                importance,
                "",
                "## Data and model hashes",
                "",
                _hash_table(base, base_lock, head_lock, card),
                "",
                "## Plots",
                "",
                *(f"{line}\n" for line in plots),
            ]
        )
        (tmp / REPORT_NAME).write_text(text.rstrip("\n") + "\n", encoding="utf-8")
        # generated output: keep it out of `git status` without touching the repository's ignores
        (tmp / ".gitignore").write_text("*\n", encoding="utf-8")
    return out_dir / REPORT_NAME


def main(argv: list[str] | None = None) -> None:
    """Command line: build the report; bad input is one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(
        description="Report what the working tree changed against a base git ref: params and "
        "metrics diffs, plots, data and model hashes, dvc.lock check.",
    )
    parser.add_argument("--base", required=True, help="git ref to compare with (origin/main)")
    parser.add_argument(
        "--out", type=Path, default=Path("reports/pr"), help="output directory (reports/pr)"
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root (.)")
    args = parser.parse_args(argv)
    with exit_on_error("interrupted; the previous report, if any, is unchanged"):
        path = build_report(args.repo, args.base, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
