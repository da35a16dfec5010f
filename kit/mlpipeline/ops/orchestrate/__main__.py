"""Command line of the orchestration runner, run in the pipeline's environment:

    python -m mlpipeline.ops.orchestrate graph [--repo DIR]          # the stage graph, JSON
    python -m mlpipeline.ops.orchestrate run STAGE [--repo DIR] ...  # one stage as one task
    python -m mlpipeline.ops.orchestrate hash PATH [--repo DIR]      # DVC's hash of a path
    python -m mlpipeline.ops.orchestrate stepfunctions [--output F]  # AWS Step Functions ASL

`run` reads the upstream tasks' hand-offs, one a line, from --upstream (a file; repeated, one
file per upstream task as Kubeflow passes them) or the environment variable
MLPIPELINE_UPSTREAM, and prints its own hand-off as its last line (or writes it to --output).
With --store URL (a run prefix, e.g. s3://bucket/runs) it reads them from the run's store
instead, for each --after stage, and writes its hand-off, or its one-line error, there
(runstore.py); --experiment then names the run. Overrides come from --override, and as a JSON
list from --overrides (a workflow engine's list parameter) or MLPIPELINE_OVERRIDES (what a state
machine can pass from its input). An expected failure is one `error:` line and exit status 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mlpipeline.artifacts import atomic_path
from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.ops.orchestrate import stepfunctions as sfn
from mlpipeline.ops.orchestrate.graph import read_graph, to_json
from mlpipeline.ops.orchestrate.handoff import Handoff
from mlpipeline.ops.orchestrate.runner import dvc_hash, run_stage
from mlpipeline.ops.orchestrate.runstore import (
    ERROR_SUFFIX,
    HANDOFF_SUFFIX,
    object_url,
    read_handoffs,
    write_text,
)

UPSTREAM_ENV = "MLPIPELINE_UPSTREAM"
OVERRIDES_ENV = "MLPIPELINE_OVERRIDES"


def json_overrides(text: str | None, given_as: str) -> list[str]:
    """The overrides in a JSON list of strings (a workflow engine's list parameter, or its
    input through the environment); `given_as` names where, for the error."""
    if not (text or "").strip():
        return []
    try:
        value = json.loads(text)
    except ValueError as err:
        raise PipelineError(f'{given_as} is not JSON ({err}): give a list, ["a.b=1"]') from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PipelineError(f'{given_as} {text}: give a JSON list of strings, ["a.b=1"]')
    return value


def run_command(args: argparse.Namespace) -> None:
    """`run`: one stage, its hand-offs from and to stdin/stdout, files, or a run's store."""
    if args.store and not args.experiment:
        raise PipelineError("--store needs --experiment: the run's name, its folder in the store")
    if args.after and not args.store:
        raise PipelineError("--after names upstream stages in a run's store: give --store too")
    try:
        if args.store:
            lines = read_handoffs(args.store, args.experiment, args.after)
        else:
            lines = upstream_lines(args.upstream)
        upstream = [Handoff.decode(line) for line in lines]
        overrides = [
            *args.override,
            *json_overrides(args.overrides, "--overrides"),
            *json_overrides(os.environ.get(OVERRIDES_ENV), OVERRIDES_ENV),
        ]
        handoff = run_stage(
            args.repo,
            args.stage,
            upstream,
            overrides,
            # the run's name only with overrides: compose then keeps them, as under `dvc exp
            # run`; without, it composes conf/ (an engine may pass it on every run)
            args.experiment if overrides else None,
            echo=lambda line: print(line, flush=True),
        )
    except PipelineError as err:
        if args.store:  # where the state machine reads why the stage failed
            write_text(object_url(args.store, args.experiment, args.stage, ERROR_SUFFIX), str(err))
        raise
    if args.store:
        url = object_url(args.store, args.experiment, args.stage, HANDOFF_SUFFIX)
        write_text(url, handoff.encode() + "\n")
        print(f"hand-off written to {url}", flush=True)
    elif args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(handoff.encode() + "\n", encoding="utf-8")
    else:
        print(handoff.encode(), flush=True)


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
    run_cmd.add_argument("--store", help="a run prefix (s3://bucket/runs): hand-offs go there")
    run_cmd.add_argument(
        "--after", action="append", default=[], help="an upstream stage (with --store)"
    )
    sfn_cmd = commands.add_parser(
        "stepfunctions", parents=[common], help="the graph as an AWS Step Functions machine"
    )
    sfn_cmd.add_argument("--output", type=Path, help="write the ASL JSON here, not to stdout")
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
        elif args.command == "stepfunctions":
            stages = read_graph(args.repo)
            definition = sfn.compile_state_machine(stages, sfn.conf_resources(args.repo))
            sfn.check_structure(definition, stages)
            if args.output:
                with atomic_path(args.output) as tmp:
                    tmp.write_text(sfn.to_text(definition), encoding="utf-8")
                print(f"wrote {args.output}: {len(stages)} stages")
            else:
                sys.stdout.write(sfn.to_text(definition))
        elif args.command == "hash":
            for path in args.paths:
                print(f"{dvc_hash(args.repo, path)}  {path}")
        else:
            run_command(args)


if __name__ == "__main__":
    main()
