"""Stage `compose`: resolve the Hydra configs in conf/ into params.yaml.

DVC composes conf/ only inside `dvc exp run -S`; this stage (deps: conf/) makes plain
`dvc repro` do it too, so an edit under conf/ can never train on stale parameters. Its declared
output is a constant stamp that the next stage depends on, which orders the stages without
making every config edit re-run the data stages.

Inside `dvc exp run` (DVC sets DVC_EXP_NAME), params.yaml is left as DVC wrote it: with
`hydra.enabled`, DVC composes conf/ (uncommitted edits included) with the `-S` overrides just
before the run, and composing again here would drop those overrides; with `--no-hydra` the user
manages params.yaml. It is still validated.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mlpipeline.artifacts import atomic_path
from mlpipeline.config import Config, check_targets, load_config, validate_config
from mlpipeline.errors import PipelineError, exit_on_error

STAMP_TEXT = "params.yaml is composed from conf/ by the `compose` stage of dvc.yaml\n"


def compose_config(conf_dir: Path, overrides: list[str] | None = None) -> tuple[str, Config]:
    """Compose conf/ with Hydra overrides; return the resolved YAML text and the typed config
    (schema-checked; `check_targets` is the caller's: it imports torch and Lightning).

    The YAML is written exactly as `dvc exp run` writes it (OmegaConf.to_yaml), so the two
    producers of params.yaml never disagree on formatting.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf_dir = Path(conf_dir).resolve()
    if not (conf_dir / "config.yaml").is_file():
        raise PipelineError(f"{conf_dir}/config.yaml not found: run from the repository root")
    try:
        with initialize_config_dir(str(conf_dir), version_base=None):
            cfg = compose(config_name="config", overrides=list(overrides or []))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise PipelineError(_one_line(err)) from None
    raw: Any = OmegaConf.to_container(cfg)
    return OmegaConf.to_yaml(cfg), validate_config(raw, source="conf/")


def compose_stage(
    conf_dir: Path, output: Path, stamp: Path, overrides: list[str], experiment: str | None = None
) -> Config:
    """Write params.yaml (and the stamp) from conf/; nothing is written if validation fails.
    In a DVC experiment (`experiment` names it) an existing params.yaml is kept, validated."""
    if experiment and output.is_file() and not overrides:
        config = load_config(output)
        check_targets(config)
        print(f"compose: experiment {experiment}: keeping {output} as `dvc exp run` composed it")
    else:
        text, config = compose_config(conf_dir, overrides)
        check_targets(config)
        for line in changes(output, text):
            print(f"compose: {line}")
        with atomic_path(output) as tmp:
            tmp.write_text(text, encoding="utf-8")
    with atomic_path(stamp) as tmp:
        tmp.write_text(STAMP_TEXT, encoding="utf-8")
    return config


def changes(old_path: Path, new_text: str) -> list[str]:
    """What the new composition changes in the existing params.yaml, one line per key, so
    an edit under conf/ is visible in the log."""
    import yaml

    from mlpipeline.tracking import flatten

    if not old_path.is_file():
        return []
    old = flatten(yaml.safe_load(old_path.read_text(encoding="utf-8")) or {})
    new = flatten(yaml.safe_load(new_text))
    return [
        f"{key}: {old.get(key, '(absent)')} -> {new.get(key, '(absent)')}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _one_line(err: Exception) -> str:
    """Hydra's messages span lines ('Available options in ...:\\n\\tcnn\\n\\tmlp')."""
    text = str(err).strip()
    if "Available options" in text:
        head, _, options = text.partition("Available options")
        options = options.split("Config search path")[0]  # Hydra appends its search path
        group, _, names = options.partition(":")
        choices = ", ".join(n.strip() for n in names.split() if n.strip())
        return f"{head.strip()} (available options{group}: {choices})"
    return " ".join(text.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=mlp")
    parser.add_argument("--conf", type=Path, default=Path("conf"))
    parser.add_argument("--output", type=Path, default=Path("params.yaml"))
    parser.add_argument("--stamp", type=Path, default=Path("data/.composed"))
    args = parser.parse_args()
    with exit_on_error():
        config = compose_stage(
            args.conf, args.output, args.stamp, args.overrides, os.environ.get("DVC_EXP_NAME")
        )
    print(
        f"composed {args.conf}/ -> {args.output}: data={config.data.source.kind} "
        f"model={config.model.target.rsplit('.', 1)[-1]} "
        f"optimizer={config.optimizer.target.rsplit('.', 1)[-1]}"
    )


if __name__ == "__main__":
    main()
