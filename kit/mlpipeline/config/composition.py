"""Hydra composition of conf/ into the resolved config, with one-line errors that name the key
and its valid choices (Hydra's own messages span lines and advise `+key=` for a typo)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlpipeline.config.guard import (
    allowed_prefixes,
    check_config,
    check_overrides,
    is_allowed,
    yaml_problem,
)
from mlpipeline.config.schema import Config, suggest, validate_config
from mlpipeline.config.targets import arguments, locate
from mlpipeline.errors import PipelineError

NOT_IN_STRUCT = re.compile(r"Could not override '([^']+)'")


def compose_config(conf_dir: Path, overrides: list[str] | None = None) -> tuple[str, Config]:
    """Compose conf/ with Hydra overrides; return the resolved YAML text and the typed config
    (schema-checked; `check_targets` is the caller's: it imports torch and Lightning).

    The YAML is written exactly as `dvc exp run` writes it (OmegaConf.to_yaml), so the two
    producers of params.yaml never disagree on formatting.
    """
    conf_dir = Path(conf_dir).resolve()
    overrides = list(overrides or [])
    # before Hydra resolves anything: an override's resolver would run during composition
    prefixes = allowed_prefixes(conf_dir)
    check_overrides(overrides, prefixes)
    cfg = _compose(conf_dir, overrides)
    raw: Any = OmegaConf.to_container(cfg)
    check_config(raw, prefixes, source="conf/")
    return OmegaConf.to_yaml(cfg), validate_config(raw, source="conf/")


def _compose(conf_dir: Path, overrides: list[str]) -> Any:
    if not (conf_dir / "config.yaml").is_file():
        raise PipelineError(f"{conf_dir}/config.yaml not found: run from the repository root")
    try:
        with initialize_config_dir(str(conf_dir), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        match = NOT_IN_STRUCT.search(str(err))
        if match and "is not in struct" in str(err.__cause__):
            raise PipelineError(_unknown_key(conf_dir, overrides, match.group(1))) from None
        raise PipelineError(one_line(err)) from None
    except yaml.YAMLError as err:  # Hydra lets the parser's error, lines long, through
        raise PipelineError(yaml_problem(err)) from None
    return cfg


def _unknown_key(conf_dir: Path, overrides: list[str], key: str) -> str:
    """For an override of a key that conf/ does not have: the closest valid key and the valid
    ones, from conf/ and, in a `_target_` section, from the class's arguments."""
    parent, _, name = key.rpartition(".")
    rest = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(key)]
    node = _compose(conf_dir, rest)
    for part in filter(None, parent.split(".")):
        node = node.get(part) if OmegaConf.is_dict(node) else None
    present = set(node.keys()) if OmegaConf.is_dict(node) else set()
    takes: set[str] = set()
    # only an allowed target is imported for the hint (an import runs the module's code)
    if "_target_" in present and is_allowed(node["_target_"], allowed_prefixes(conf_dir)):
        with contextlib.suppress(PipelineError):
            takes = set(arguments(locate(node["_target_"]), parent) or {})
    where = f"{parent}." if parent else ""
    if name in present:  # a mapping of the user's own keys (features.columns): new ones need +
        return f"{key}: new entries need a +: +{key}.<name>.<field>=<value>, or +{key}={{...}}"
    if name in takes:
        return (
            f"{key}: not set in conf/, though {node['_target_']} takes it: add it with "
            f"+{key}=<value>, or set it in the conf file"
        )
    valid = sorted((present | takes) - {"_target_"})
    return f"{where}{name}: unknown key; {suggest(name, valid)}valid: {', '.join(valid)}"


def one_line(err: Exception) -> str:
    """Hydra's messages span lines ('Available options in ...:\\n\\tcnn\\n\\tmlp')."""
    text = str(err).strip()
    if "Available options" in text:
        head, _, options = text.partition("Available options")
        options = options.split("Config search path")[0]  # Hydra appends its search path
        group, _, names = options.partition(":")
        choices = ", ".join(n.strip() for n in names.split() if n.strip())
        return f"{head.strip()} (available options{group}: {choices})"
    return " ".join(text.split())
