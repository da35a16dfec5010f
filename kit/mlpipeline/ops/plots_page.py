"""The page `dvc plots show` fills, with Vega's JavaScript inside it, so that the plots draw on
a machine without internet: DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN.

    python -m mlpipeline.ops.plots_page .dvc/plots/page.html

`make install` writes it; `.dvc/config` names it (`plots.html_template`). The JavaScript comes
from vl-convert-python, which bundles those libraries; the page is written once per version of
it, as bundling takes seconds.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import vl_convert

from mlpipeline.artifacts import atomic_path
from mlpipeline.errors import exit_on_error

# DVC's templates declare Vega-Lite 5: the bundle's Vega-Lite is the newest 5.x vl-convert has
VEGA_LITE_MAJOR = "5."
# DVC fills {refresh_tag} and {plot_divs}; without {scripts} it adds none of its CDN scripts
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- MARK -->
    <script type="text/javascript">
BUNDLE
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    """The HTML template: DVC's page, with the JavaScript inline instead of from a CDN."""
    vega_lite = [v for v in vl_convert.get_vegalite_versions() if v.startswith(VEGA_LITE_MAJOR)]
    bundle = vl_convert.javascript_bundle(vl_version=vega_lite[-1])
    # "</script" inside the code would end the element early; "<\/" is the same in JavaScript
    bundle = bundle.replace("</script", "<\\/script")
    return PAGE.replace("MARK", mark()).replace("BUNDLE", bundle)


def mark() -> str:
    """The comment naming what the page holds: a page with it is up to date."""
    return f"vega, vega-lite, vega-embed from vl-convert-python {version('vl-convert-python')}"


def write_page(path: Path) -> bool:
    """Write the page to `path` unless it is there for this vl-convert-python; True if
    written."""
    if path.is_file() and f"<!-- {mark()} -->" in path.read_text(encoding="utf-8"):
        return False
    text = page()
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> None:
    """Command line: write the page; an error is one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="where to write it (.dvc/plots/page.html)")
    args = parser.parse_args(argv)
    with exit_on_error():
        if write_page(args.path):
            print(f"wrote {args.path}: `dvc plots show` draws offline")


if __name__ == "__main__":
    main()
