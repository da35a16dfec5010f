"""The template renders: the default answers give this repository itself, less the template's
own files; each twin's plain file is its default rendering; a bad answer stops copier with one
line; other answers leave out what was not chosen (the slow tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from render import (
    ANSWERS,
    ROOT,
    is_template_own,
    project_files,
    render,
    template_copy,
    twins,
    working_tree,
    write_twins,
)

from mlpipeline.config import compose_config


def executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o100)


def test_the_default_rendering_is_the_repository_less_the_templates_own_files(
    default_project: Path,
) -> None:
    expected = [name for name in working_tree() if not is_template_own(name)]
    rendered = [name for name in project_files(default_project) if name != ANSWERS]
    assert sorted(set(rendered) - set(expected)) == [], "rendered, not in the repository"
    assert sorted(set(expected) - set(rendered)) == [], "in the repository, not rendered"
    differ = [n for n in expected if (ROOT / n).read_bytes() != (default_project / n).read_bytes()]
    assert differ == [], f"differ from the repository (twins: run `make template`): {differ}"
    modes = [n for n in expected if executable(ROOT / n) != executable(default_project / n)]
    assert modes == [], f"executable in one, not in the other: {modes}"


def test_each_twins_plain_file_is_its_default_rendering(default_project: Path) -> None:
    assert {"Makefile", "README.md", "conf/config.yaml"} <= set(twins())
    stale = [n for n in twins() if (ROOT / n).read_bytes() != (default_project / n).read_bytes()]
    assert stale == [], f"run `make template`: {stale} differ from their twins' rendering"


def test_make_template_rewrites_a_stale_plain_file_and_keeps_jinjas_delimiters_in_the_makefile(
    tmp_path: Path,
) -> None:
    root = template_copy(tmp_path / "template")
    # a maintainer adds a recipe line with bash's ${#x} and braces to the twin, not to the
    # plain Makefile; README.md is edited by hand, against its twin
    line = "\t@x=abc; echo $${#x} {{ x }} {% y %} {# z #}\n"
    twin = root / "Makefile.jinja"
    twin.write_text(insert_before_last(twin.read_text(), "{% endraw %}", line))
    (root / "README.md").write_text("stale\n")
    assert write_twins(root) == ["Makefile", "README.md"]
    assert (root / "Makefile").read_text().endswith(line)
    assert (root / "README.md").read_bytes() == (ROOT / "README.md").read_bytes()
    assert write_twins(root) == []


def insert_before_last(text: str, marker: str, insert: str) -> str:
    head, _, tail = text.rpartition(marker)
    return head + insert + marker + tail


def test_the_answers_file_records_the_defaults(default_project: Path) -> None:
    answers = yaml.safe_load((default_project / ANSWERS).read_text())
    assert answers["data"] == "digits"
    assert answers["project"] == ""
    assert {"airflow", "serving_image", "monitoring", "github_workflows"} <= set(answers)
    # computed values are not answers
    assert "stack" not in answers and "demo_results" not in answers


def copier_copy(template: Path, dest: Path, *answers: str) -> subprocess.CompletedProcess:
    """copier's CLI, as a user runs it: --defaults, --trust, each answer as --data."""
    data = [arg for answer in answers for arg in ("--data", answer)]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--defaults",
            "--trust",
            *data,
            "--vcs-ref",
            "HEAD",
            str(template),
            str(dest),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["project=My_Model"], "project My_Model is not a lowercase name"),
        (["project=9lives"], "project 9lives is not a lowercase name"),
        (["data=table", "data_path=mydata.csv"], "data_path mydata.csv is not under data/raw/"),
        (["data=images", "data_path=data/raw/../x"], "is not under data/raw/"),
        (["data=table", "data_path=data/raw/t.xlsx"], "is neither .csv nor .parquet"),
    ],
)
def test_a_bad_answer_stops_copier_with_one_line(
    template: Path, tmp_path: Path, answers: list[str], expected: str
) -> None:
    result = copier_copy(template, tmp_path / "project", *answers)
    assert result.returncode != 0
    # copier 9's CLI prints its own traceback before an answer given with --data fails its
    # validator (a prompt shows the line alone and asks again): the last line is ours
    assert expected in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "project").exists() or not any((tmp_path / "project").iterdir())


def test_a_good_project_name_names_the_model_in_conf(template: Path, tmp_path: Path) -> None:
    project = render(template, tmp_path / "p", {"project": "churn-2"})
    conf = yaml.safe_load((project / "conf/config.yaml").read_text())
    assert conf["project"] == "churn-2"
    # another name gives other results than the demo's recorded ones
    assert not (project / "dvc.lock").exists()


# what each optional part owns, as a project's file list shows it
AIRFLOW = [
    "dags/mlpipeline_dags.py",
    "orchestration/airflow/pyproject.toml",
    "docker/train.Dockerfile",
    "docs/orchestration.md",
    "tests/ops/test_airflow.py",
    "orchestration/kfp/pyproject.toml",
    "docs/orchestration-kfp.md",
    "tests/ops/test_kfp.py",
]
IMAGE = ["Dockerfile", "tests/ops/test_image.py", ".github/workflows/deploy.yml"]
STACK = [
    "docker-compose.yml",
    "monitoring/prometheus/rules.yml",
    "docker/mlflow.Dockerfile",
    "tests/monitoring/test_rules.py",
    "tests/ops/test_stack.py",
]
WORKFLOWS = [".github/workflows/ci.yml", "scripts/lint-workflows.sh", "tests/ci/test_workflows.py"]
DEMO_RESULTS = [
    "dvc.lock",
    "params.yaml",
    "reports/dvc.yaml",
    "reports/metrics.json",
    "reports/figures/confusion.png",
]
TEMPLATE_OWN = [
    "copier.yml",
    "tests/template/render.py",
    ".ci/run",
    "Makefile.jinja",
    "README.md.jinja",
    "conf/config.yaml.jinja",
    ".copier-answers.yml.jinja",
]


def check_files(project: Path, present: list[str], absent: list[str]) -> list[str]:
    files = project_files(project)
    print(f"{project.name}: {len(files)} files\n  " + "\n  ".join(files))
    assert [name for name in present if name not in files] == []
    assert [name for name in absent if name in files] == []
    return files


@pytest.mark.slow
def test_the_defaults_give_every_part_and_the_demo(default_project: Path) -> None:
    check_files(
        default_project,
        [*AIRFLOW, *IMAGE, *STACK, *WORKFLOWS, *DEMO_RESULTS, "conf/data/digits.yaml", ANSWERS],
        TEMPLATE_OWN,
    )
    conf = yaml.safe_load((default_project / "conf/config.yaml").read_text())
    assert {"data": "digits"} in conf["defaults"] and "data" not in conf
    assert "data/prepared/test/x.npy" in (default_project / "README.md").read_text()


@pytest.mark.slow
def test_a_table_regression_without_orchestration_or_monitoring(
    template: Path, tmp_path: Path
) -> None:
    project = render(
        template,
        tmp_path / "table",
        {"data": "table", "task": "regression", "airflow": False, "monitoring": False},
    )
    check_files(
        project,
        [*IMAGE, *WORKFLOWS, "data/raw/table.csv", "conf/data/tabular.yaml", ANSWERS],
        [*AIRFLOW, *STACK, *DEMO_RESULTS, *TEMPLATE_OWN],
    )
    composed = compose_config(project / "conf")[1]
    # a blank project: the model is named after the data's file
    assert (composed.task, composed.data.source.kind, composed.project) == (
        "regression",
        "csv",
        "table",
    )
    conf = yaml.safe_load((project / "conf/config.yaml").read_text())
    defaults = conf["defaults"]
    assert {"data": "tabular"} in defaults and {"task": "regression"} in defaults
    assert {"model": "mlp"} in defaults
    assert conf["data"]["source"] == {"path": "data/raw/table.csv", "label": "label"}
    header, *rows = (project / "data/raw/table.csv").read_text().splitlines()
    assert "label" in header.split(",") and len(rows) >= 200
    makefile = (project / "Makefile").read_text()
    assert "airflow" not in makefile and "stack-smoke" not in makefile and "\nsmoke:" in makefile
    readme = (project / "README.md").read_text()
    assert "data/prepared/test/x.npy" not in readme and "docs/orchestration.md" not in readme
    assert "data/raw/table.csv" in readme


@pytest.mark.slow
def test_an_image_folder_with_every_part(template: Path, tmp_path: Path) -> None:
    project = render(
        template,
        tmp_path / "images",
        {"data": "images", "project": "shapes"},
    )
    check_files(
        project,
        [*AIRFLOW, *IMAGE, *STACK, *WORKFLOWS, "conf/data/images.yaml", ANSWERS],
        [*DEMO_RESULTS, *TEMPLATE_OWN],
    )
    classes = sorted(p.name for p in (project / "data/raw/images").iterdir())
    assert len(classes) == 3
    assert all(len(list((project / "data/raw/images" / c).glob("*.png"))) >= 10 for c in classes)
    composed = compose_config(project / "conf")[1]
    assert (composed.data.source.kind, str(composed.data.source.path)) == (
        "images",
        "data/raw/images",
    )
    conf = yaml.safe_load((project / "conf/config.yaml").read_text())
    assert {"data": "images"} in conf["defaults"] and {"model": "cnn"} in conf["defaults"]
    assert conf["project"] == "shapes"
    assert conf["data"]["source"] == {"path": "data/raw/images"}


@pytest.mark.slow
def test_no_serving_image_leaves_out_the_stack_and_deploying_it(
    template: Path, tmp_path: Path
) -> None:
    project = render(template, tmp_path / "p", {"serving_image": False, "github_workflows": True})
    check_files(project, [".github/workflows/ci.yml", "Makefile"], [*IMAGE, *STACK])
    makefile = (project / "Makefile").read_text()
    assert "\nimage:" not in makefile and "\nserve:" in makefile


def test_make_help_names_each_target_once_the_template_mk_is_included() -> None:
    listing = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    targets = [line.split()[1] for line in listing.splitlines()]
    assert "template" in targets and "help" in targets
    assert not [t for t in targets if t in ("Makefile", "tests/template/template.mk")]
