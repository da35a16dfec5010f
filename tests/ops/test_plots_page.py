"""`dvc plots show` offline: the page it fills (mlpipeline.ops.plots_page, named by
.dvc/config) holds Vega's JavaScript, so it loads no script from the internet."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from helpers import ROOT, run

from mlpipeline.ops.plots_page import main, write_page

# a <script> element that loads its code from a URL
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


def page_setting() -> Path:
    """The page .dvc/config names, as DVC resolves it (relative to .dvc/)."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    return Path(".dvc") / config["plots"]["html_template"]


def test_dvc_plots_show_writes_a_page_that_loads_no_script_from_the_internet(
    tiny_repo: Path,
) -> None:
    page = tiny_repo / page_setting()
    assert not page.exists(), "an ignored file: make install writes it"
    main([str(page)])
    assert write_page(page) is False, "written once per vl-convert-python"

    run(["dvc", "plots", "show", "-o", "shown"], tiny_repo)
    html = (tiny_repo / "shown/index.html").read_text()
    assert not REMOTE_SCRIPT.search(html), "a script from the internet: blank offline"
    assert "window.vegaEmbed=" in html and "vegaEmbed('#" in html
    assert "Confusion matrix (test)" in html


def test_the_page_is_ignored_by_git() -> None:
    ignored = run(["git", "check-ignore", str(page_setting())], ROOT, check=False)
    assert ignored.returncode == 0
