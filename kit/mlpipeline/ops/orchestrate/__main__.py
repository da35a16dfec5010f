"""Command line of the orchestration runner, run in the pipeline's environment:

    python -m mlpipeline.ops.orchestrate graph [--repo DIR]          # the stage graph, JSON
    python -m mlpipeline.ops.orchestrate run STAGE [--repo DIR] ...  # one stage as one task
    python -m mlpipeline.ops.orchestrate hash PATH [--repo DIR]      # DVC's hash of a path

`run` reads the upstream tasks' hand-offs, one a line, from --upstream (a file; repeated, one
file per upstream task as Kubeflow passes them) or the environment variable
MLPIPELINE_UPSTREAM, and prints its own hand-off as its last line (or writes it to --output).
An expected failure is one `error:` line and exit status 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mlpipeline.artifacts import atomic_path
from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.ops.orchestrate.graph import read_graph, to_json
from mlpipeline.ops.orchestrate.handoff import Handoff
from mlpipeline.ops.orchestrate.runner import dvc_hash, run_stage

UPSTREAM_ENV = "MLPIPELINE_UPSTREAM"


def upstream_lines(paths: Sequence[Path]) -> list[str]:
    """The upstream hand-offs: the lines of the files `paths`, else of MLPIPELINE_UPSTREAM."""
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise PipelineError(f"cannot read the upstream hand-offs {path}: {err}") from None
    if not paths:
        texts.append(os.environ.get(UPSTREAM_ENV, ""))
    return [line for text in texts for line in text.splitlines() if line.strip()]


def json_overrides(text: str | None) -> list[str]:
    """The overrides in a JSON list of strings (a workflow engine's list parameter)."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError as err:
        raise PipelineError(f'--overrides is not JSON ({err}): give a list, ["a.b=1"]') from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PipelineError(f'--overrides {text}: give a JSON list of strings, ["a.b=1"]')
    return value


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the command; PipelineError becomes one line."""
    parser = argparse.ArgumentParser(
        prog="python -m mlpipeline.ops.orchestrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository")
    graph_cmd = commands.add_parser("graph", parents=[common], help="print the stage graph")
    graph_cmd.add_argument("--output", type=Path, help="write it here instead")
    run_cmd = commands.add_parser("run", parents=[common], help="run one stage as a task")
    run_cmd.add_argument("stage", help="the stage's DVC address (see `graph`)")
    run_cmd.add_argument(
        "--upstream", type=Path, action="append", default=[],
        help="a file of upstream hand-offs, one a line (repeat it for more files)",
    )  # fmt: skip
    run_cmd.add_argument(
        "--override", action="append", default=[], help="a Hydra override, as dvc exp run -S"
    )
    run_cmd.add_argument("--overrides", help="more overrides, as a JSON list of strings")
    run_cmd.add_argument(
        "--experiment", help="the run's name for the stages (DVC_EXP_NAME) if it has overrides"
    )
    run_cmd.add_argument("--output", type=Path, help="write the hand-off here, not to stdout")
    hash_cmd = commands.add_parser("hash", parents=[common], help="DVC's hash of paths")
    hash_cmd.add_argument("paths", nargs="+", help="paths in the repository")
    args = parser.parse_args(argv)

    with exit_on_error("interrupted"):
        if args.command == "graph":
            text = to_json(read_graph(args.repo))
            if args.output:
                with atomic_path(args.output) as tmp:
                    tmp.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
        elif args.command == "hash":
            for path in args.paths:
                print(f"{dvc_hash(args.repo, path)}  {path}")
        else:
            upstream = [Handoff.decode(line) for line in upstream_lines(args.upstream)]
            overrides = [*args.override, *json_overrides(args.overrides)]
            handoff = run_stage(
                args.repo,
                args.stage,
                upstream,
                overrides,
                # the run's name only with overrides: compose then keeps them, as under `dvc
                # exp run`; without, it composes conf/ (an engine may pass it on every run)
                args.experiment if overrides else None,
                echo=lambda line: print(line, flush=True),
            )
            if args.output:
                with atomic_path(args.output) as tmp:
                    tmp.write_text(handoff.encode() + "\n", encoding="utf-8")
            else:
                print(handoff.encode(), flush=True)


if __name__ == "__main__":
    main()
