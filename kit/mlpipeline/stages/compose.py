"""Stage `compose`: resolve the Hydra configs in conf/ into params.yaml.

DVC composes conf/ only inside `dvc exp run -S`; this stage makes plain `dvc repro` do it too.
It runs on every `dvc repro` (`always_changed`), so after an edit under conf/, a hand edit of
params.yaml, or an experiment left in the workspace (`dvc exp run -S`, `dvc exp apply`: their
params.yaml and dvc.lock agree, so no hash shows it), `dvc repro` composes params.yaml from
conf/ again, says which values it puts back, and re-runs exactly the stages whose parameters
changed; when nothing changed it writes nothing, and no other stage runs. Its stamp output is
persistent: DVC's run cache never restores this stage in place of running it.

Inside `dvc exp run` (DVC sets DVC_EXP_NAME), params.yaml is left as DVC wrote it: with
`hydra.enabled`, DVC composes conf/ (uncommitted edits included) with the `-S` overrides just
before the run, and composing again here would drop those overrides; with `--no-hydra` the user
manages params.yaml. It is still validated.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from mlpipeline.artifacts import write_text
from mlpipeline.config import Config, check_targets_once, compose_config, load_config
from mlpipeline.config.guard import allowed_prefixes, check_config
from mlpipeline.config.schema import flatten
from mlpipeline.config.tasks import task_for
from mlpipeline.determinism import prepare_process
from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.plots import IMPORTANCE, write_definitions

STAMP_TEXT = "params.yaml is composed from conf/ by the `compose` stage of dvc.yaml\n"


def compose_stage(
    conf_dir: Path, output: Path, stamp: Path, overrides: list[str], experiment: str | None = None
) -> Config:
    """Write params.yaml, the task's plot definitions for `dvc plots` (`paths.plots`) and the
    stamp from conf/; nothing is written if validation fails. In a DVC experiment
    (`experiment` names it) an existing params.yaml is kept, validated."""
    if experiment and output.is_file() and not overrides:
        config = load_config(output)
        # DVC composed it with the -S overrides: no project code saw them before now
        check_config(config.dump(), allowed_prefixes(conf_dir), source=str(output))
        check_targets_once(config)
        print(f"compose: experiment {experiment}: keeping {output} as `dvc exp run` composed it")
    else:
        text, config = compose_config(conf_dir, overrides)
        check_targets_once(config)
        lines = changes(output, text)
        if lines and not overrides:
            print(
                f"compose: {output} held values that conf/ does not (an experiment's or a hand "
                "edit): back to conf/ (to keep them, set them in conf/)"
            )
        for line in lines:
            print(f"compose: {line}")
        write_text(output, text)
        if moved := [line.split(":")[0] for line in lines if line.startswith("paths.")]:
            # dvc.yaml's ${paths.*} were read from the old params.yaml when this run started
            raise PipelineError(
                f"{', '.join(moved)} changed in conf/paths/: {output} holds the new paths now; "
                "run `dvc repro` again, so that dvc.yaml reads them"
            )
    # the paths are relative to the repository's root, where params.yaml lies
    paths = config.paths.rebased(output.parent)
    plots = [*task_for(config.task).plots, IMPORTANCE]  # the task's, and the explain stage's
    write_definitions(plots, paths.history, paths.eval, paths.plots, paths.explain)
    write_text(stamp, STAMP_TEXT)
    return config


def changes(old_path: Path, new_text: str) -> list[str]:
    """What the new composition changes in the existing params.yaml, one line per key, so
    an edit under conf/ (or the undoing of a hand edit) is visible in the log."""
    if not old_path.is_file():
        return []
    old = flatten(yaml.safe_load(old_path.read_text(encoding="utf-8")) or {})
    new = flatten(yaml.safe_load(new_text))

    def shown(values: dict[str, Any], key: str) -> str:
        # as params.yaml spells it (null, true), not as Python does (None, True)
        if key not in values:
            return "(absent)"
        return yaml.safe_dump(values[key], default_flow_style=True).removesuffix("\n...\n").strip()

    return [
        f"{key}: {shown(old, key)} -> {shown(new, key)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def main() -> None:
    prepare_process()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides (e.g. trainer=ddp); written to params.yaml they last until the "
        "next `dvc repro`, which composes it from conf/ again: use `dvc exp run -S` for an "
        "experiment, or --output for a config to pass to a stage's --params",
    )
    parser.add_argument("--conf", type=Path, default=Path("conf"))
    parser.add_argument("--output", type=Path, default=Path("params.yaml"))
    parser.add_argument("--stamp", type=Path, default=Path("data/.composed"))
    args = parser.parse_args()
    with exit_on_error():
        config = compose_stage(
            args.conf, args.output, args.stamp, args.overrides, os.environ.get("DVC_EXP_NAME")
        )
    read = config.data.source.kwargs().get("path")
    print(
        f"composed {args.conf}/ -> {args.output}: data={config.data.source.name}"
        f"{f' ({read})' if read else ''} "
        f"model={config.model.target.rsplit('.', 1)[-1]} "
        f"optimizer={config.optimizer.target.rsplit('.', 1)[-1]}"
    )
    if args.overrides and args.output.name == "params.yaml":
        print(
            f"compose: {args.output} now holds overrides that conf/ does not; the next "
            "`dvc repro` composes it from conf/ again (to keep them, edit conf/; to try "
            "them as an experiment, `dvc exp run -S`)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
