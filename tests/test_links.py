"""The README and docs/ point only at files the project has: a generated project leaves out the
parts not chosen (docs/template.md), and its pages must not link to them."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import ROOT

# a Markdown link's target, up to an anchor or a title: [text](target#anchor "title")
LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def broken_links(page: Path) -> list[str]:
    """The relative links of `page` whose file or folder does not exist."""
    targets = LINK.findall(page.read_text(encoding="utf-8"))
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    return [t for t in local if not (page.parent / t).exists()]


def test_every_relative_link_of_the_readme_and_docs_names_a_file_that_exists() -> None:
    broken = {str(p.relative_to(ROOT)): links for p in pages() if (links := broken_links(p))}
    assert not broken, f"links to files this project does not have: {broken}"
