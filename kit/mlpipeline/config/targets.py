"""Checks of the `_target_` sections against the classes they name: every key must be an
argument of the class, and every value must fit the argument's declared type and range, so a
bad value stops before any work instead of deep inside training."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import site
import sys
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from platformdirs import user_cache_path
from pydantic import ConfigDict, TypeAdapter, ValidationError

from mlpipeline.config.guard import check_config
from mlpipeline.config.schema import Config, Target, suggest
from mlpipeline.errors import PipelineError

# Arguments the code passes itself, so the config must not set them.
SUPPLIED_BY_CODE = {
    "model": {"in_shape", "num_classes"},
    "module": {"network", "num_classes", "optimizer", "scheduler", "loss", "target"},
    "optimizer": {"params"},
    "scheduler": {"optimizer"},
    "trainer": {"callbacks", "logger", "default_root_dir", "enable_checkpointing"},
    "callbacks.model_checkpoint": {"dirpath", "filename"},
}

# What training passes the LightningModule (`module`), by task: a module of one's own must take
# these (as the modules conf/module/ names by default do)
MODULE_INPUTS = {
    "classification": ("network", "num_classes", "optimizer", "scheduler"),
    "regression": ("network", "optimizer", "scheduler", "loss", "target"),
}

# What each section builds: its target must be a class of this kind, since a function of an
# allowed package would run with the section's arguments (torch.save writes any file,
# torch.hub.load fetches and runs code).
SECTION_KINDS = {
    "data": "mlpipeline.data.sources.Source",
    "data.augment": "torchvision.transforms.v2.Transform",
    "model": "torch.nn.Module",
    "module": "lightning.pytorch.LightningModule",
    "optimizer": "torch.optim.Optimizer",
    "scheduler": "torch.optim.lr_scheduler.LRScheduler",
    "trainer": "lightning.pytorch.Trainer",
    "callbacks": "lightning.pytorch.Callback",
}

# Sections whose every argument comes from the config: one it lacks is named before any work.
REQUIRED_CHECKED = {"data.source"}


def locate(dotted: str) -> Any:
    """Import `package.module.Attr` and return the attribute."""
    module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError):
        raise PipelineError(f"cannot import '{dotted}'; check the dotted path") from None
    except Exception as err:  # the module's own code failed (a missing driver, a bad build)
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise PipelineError(f"cannot import '{dotted}': {reason}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PipelineError(f"cannot import '{dotted}'; check the dotted path") from None


def instantiate(spec: dict[str, Any], key: str, **kwargs: Any) -> Any:
    """Hydra's `instantiate` of the section `key`, with its errors (a target Hydra blocks, a
    constructor that refuses its arguments) as one PipelineError line instead of Hydra's
    multi-line message and traceback."""
    try:
        return hydra_instantiate(spec, **kwargs)
    except InstantiationException as err:
        raise PipelineError(f"{key}: {' '.join(str(err).split())}") from None


def arguments(target: Any, key: str) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments the config may give `target`; None when it takes **kwargs or
    has no signature to read (some builtins)."""
    try:
        params = inspect.signature(target).parameters
    except ValueError:
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    supplied = SUPPLIED_BY_CODE.get(key, set()) | {"self"}
    return {name: p for name, p in params.items() if name not in supplied}


def check_targets(cfg: Config, keys: Collection[str] | None = None) -> None:
    """Check that each `_target_` (of the sections `keys`, default all) imports, is a class
    of the section's kind (`SECTION_KINDS`), accepts the keys given for it, and that each
    value fits the type the class declares for it. Imports every target it checks (torch,
    Lightning), after checking that each lies in the allowed packages (`allowed_targets`)."""
    check_config(cfg.dump(), cfg.allowed_targets, source="the config")
    problems = []
    for key, section in cfg.targets().items():
        if keys is not None and key not in keys:
            continue
        try:
            target = locate(section.target)
        except PipelineError as err:
            problems.append(f"{key}._target_: {err}")
            continue
        parts = key.split(".")
        kind = SECTION_KINDS.get(".".join(parts[:2])) or SECTION_KINDS[parts[0]]
        if not (inspect.isclass(target) and issubclass(target, locate(kind))):
            problems.append(
                f"{key}._target_: {section.target!r} is not a {kind} class, which {key} must name"
            )
            continue
        if (tasks := getattr(target, "tasks", None)) is not None and cfg.task not in tasks:
            # a data source says which tasks it feeds (mlpipeline.data.sources.Source.tasks)
            problems.append(
                f"{key}._target_: {section.target} feeds task {' or '.join(tasks)}, not "
                f"{cfg.task}: for a numeric label set data=tabular and data.source.label"
            )
            continue
        if key == "module" and (missing := _not_taken(target, MODULE_INPUTS[cfg.task])):
            problems.append(
                f"module._target_: {section.target} takes no {', '.join(missing)}, which "
                f"training passes a {cfg.task} module, as the default in conf/module/ does"
            )
            continue
        valid = arguments(target, key)
        if valid is None:
            continue
        hints = _type_hints(target)
        given = section.kwargs()
        if key in REQUIRED_CHECKED:
            problems += [
                f"{key}.{name}: required key is missing; {section.target} takes {name}"
                for name, p in valid.items()
                if p.default is p.empty and p.kind is not p.VAR_POSITIONAL and name not in given
            ]
        for name, value in given.items():
            if name not in valid:
                problems.append(
                    f"{key}.{name}: {section.target} takes no argument '{name}'; "
                    f"{suggest(name, set(valid))}valid: {', '.join(sorted(valid))}"
                )
            elif name in hints and (problem := _misfit(hints[name], value)):
                problems.append(
                    f"{key}.{name}{problem} (got {value!r}); {section.target} takes "
                    f"{name}: {_type_name(hints[name])}"
                )
    if problems:
        raise PipelineError("; ".join(problems))


def _not_taken(target: Any, names: Collection[str]) -> list[str]:
    """Those of `names` that `target`'s constructor does not take as keyword arguments."""
    try:
        params = inspect.signature(target).parameters
    except ValueError:
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    return [name for name in names if name not in params]


def check_targets_once(cfg: Config, stamps: Path | None = None) -> None:
    """`check_targets` of the sections whose target, with the same arguments, has not passed
    it before in this environment, as its installed packages, the sources of the target's
    own package and those of these checks are now. The check imports the targets, and
    Lightning's import alone takes seconds: an edit of the optimizer's rate then imports
    torch's optimizer, not the trainer.
    A section that passes leaves an empty stamp file in `stamps` (default: the user's cache
    directory, e.g. ~/.cache/mlpipeline/checked-targets)."""
    # a stamp of a check passed under a wider allow-list must not let a target through
    check_config(cfg.dump(), cfg.allowed_targets, source="the config")
    if stamps is None:
        stamps = user_cache_path("mlpipeline") / "checked-targets"
    sections = cfg.targets()
    environment = _environment({s.target.split(".")[0] for s in sections.values()})
    unchecked = {
        key: stamp
        for key, section in sections.items()
        if not (stamp := stamps / _fingerprint(key, section, environment, cfg.task)).is_file()
    }
    if not unchecked:
        return
    check_targets(cfg, unchecked)
    # the stamps only save time: a cache directory that cannot be written is no error
    with contextlib.suppress(OSError):
        stamps.mkdir(parents=True, exist_ok=True)
        for stamp in unchecked.values():
            stamp.touch()


def _environment(packages: set[str]) -> dict[str, str]:
    """For each top-level package: this interpreter, the distributions installed on sys.path
    (their dist-info names carry the versions), and, where the package lives outside
    site-packages (an editable install, the project's own code), the size and time of each of
    its Python files. Each package's files are read once, however many sections name it.
    The checks' own sources count for every package: a stricter check must not be skipped
    for a section that passed the old one."""
    installed = [sys.version, *_checker_sources()]
    for entry in sys.path:
        if os.path.isdir(entry):
            names = sorted(n for n in os.listdir(entry) if n.endswith(".dist-info"))
            installed.append(" ".join(names))
    # installed packages are covered by their dist-info names (site-packages, or Debian's
    # dist-packages); the rest is source that can change in place
    site_dirs = {Path(p) for p in (*site.getsitepackages(), site.getusersitepackages())}
    environment = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        roots = [Path(r) for r in (spec.submodule_search_locations or [])] if spec else []
        sources = [
            f"{path} {(stat := path.stat()).st_size} {stat.st_mtime_ns}"
            for root in roots
            if site_dirs.isdisjoint(root.parents)
            for path in sorted(root.rglob("*.py"))
        ]
        environment[package] = "\n".join([*installed, *sources])
    return environment


def _checker_sources() -> list[str]:
    """Size and time of each source file of this package, the checks' own code."""
    return [
        f"{path} {(stat := path.stat()).st_size} {stat.st_mtime_ns}"
        for path in sorted(Path(__file__).parent.glob("*.py"))
    ]


def _fingerprint(key: str, section: Target, environment: dict[str, str], task: str) -> str:
    """A hash of one section (its key, target and arguments), the task (what training passes
    the module follows it) and the environment of the target's package (`_environment`)."""
    fields = [key, section.target, section.kwargs(), task]
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=repr).encode())
    digest.update(environment[section.target.split(".")[0]].encode())
    return digest.hexdigest()


def _type_hints(target: Any) -> dict[str, Any]:
    """Annotations of the target's constructor, resolved where possible; a class whose hints
    cannot all be resolved (names imported only for type checkers) keeps the ones that can."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # NameError and friends from forward references
        return {
            name: p.annotation
            for name, p in inspect.signature(function).parameters.items()
            if p.annotation is not inspect.Parameter.empty and not isinstance(p.annotation, str)
        }


def _misfit(annotation: Any, value: Any) -> str | None:
    """Why `value` does not fit `annotation` (': <reason>' with the element's position), or
    None when it fits or the type cannot be checked."""
    try:
        adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # types pydantic cannot build a validator for: leave them to the class
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = "".join(f".{p}" for p in first["loc"] if isinstance(p, int))
        return f"{where}: {first['msg']}"
    except Exception:
        return None
    return None


def _type_name(annotation: Any) -> str:
    """A readable type: `Sequence[int >= 1]`, `float >= 0 and < 1`, `int | None`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = [b for meta in annotation.__metadata__ for b in _bounds(meta)]
        return " ".join([_type_name(args[0]), " and ".join(bounds)]).strip()
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _bounds(meta: Any) -> list[str]:
    """`>= 0`, `< 1`: the bounds a pydantic Field or an annotated_types constraint sets."""
    found = []
    for item in getattr(meta, "metadata", None) or [meta]:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if (bound := getattr(item, attr, None)) is not None:
                found.append(f"{op} {bound}")
    return found
