"""The template's own fixtures: one committed copy of the working tree as Copier's template,
and its rendering with the default answers, shared by the tests of a run."""

from __future__ import annotations

from pathlib import Path

import pytest
from render import render, template_copy


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree, committed in a temporary git repository: Copier's template."""
    return template_copy(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def default_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template rendered with every answer its default."""
    return render(template, tmp_path_factory.mktemp("default") / "project")
