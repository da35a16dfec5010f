"""What a config may name, checked before anything it names is imported and before params.yaml
is written: every `_target_` lies in a package of conf/config.yaml's `allowed_targets`, and an
override calls no resolver (`${oc.env:...}` would copy the environment into params.yaml, and
from there into git, MLflow and reports).

Overrides come from whoever runs `dvc exp run -S`, triggers the Airflow DAG or starts a sweep;
conf/ is the repository's own, so the allow-list is set there and no override may change it."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from antlr4.tree.Tree import TerminalNode
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, QuotedString
from omegaconf import grammar_parser
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser as Grammar

from mlpipeline.errors import PipelineError

ALLOWED_KEY = "allowed_targets"
TARGET_KEY = "_target_"
# a dotted Python name: a package (`torch`) or a callable's path (`torch.optim.AdamW`)
DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
WHERE = f"conf/config.yaml's {ALLOWED_KEY}"
GUARDED = "_mlpipeline_guarded"  # marks Hydra's load_configuration once guard_compositions wraps it


def yaml_problem(err: Exception, path: Path | str | None = None) -> str:
    """A YAML error as one line: `file:line:column: invalid YAML: problem (context)`; the
    file is `path`, else the one the parser names."""
    mark = getattr(err, "problem_mark", None)
    if not isinstance(err, yaml.MarkedYAMLError) or mark is None:
        return f"{path or 'config'}: invalid YAML: {' '.join(str(err).split())}"
    path = Path(path or mark.name)
    # as the user typed it (conf/...) where the file lies under the working directory
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    context = ""
    if err.context and err.context_mark is not None:
        where = f"line {err.context_mark.line + 1}, column {err.context_mark.column + 1}"
        context = f" ({err.context} at {where})"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {err.problem}{context}"


def allowed_prefixes(conf_dir: Path) -> tuple[str, ...]:
    """The packages `_target_`s may name: `allowed_targets` of conf_dir/config.yaml, read from
    that file alone, so that neither an override nor another conf file widens it."""
    path = Path(conf_dir) / "config.yaml"
    if not path.is_file():
        raise PipelineError(f"{path} not found: run from the repository root")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineError(yaml_problem(err, path)) from None
    value = data.get(ALLOWED_KEY) if isinstance(data, dict) else None
    if not isinstance(value, list) or not all(
        isinstance(v, str) and DOTTED.fullmatch(v) for v in value
    ):
        raise PipelineError(
            f"{path}: {ALLOWED_KEY} must be a list of package names, e.g. [mlpipeline, torch, "
            f"lightning, torchmetrics, timm] (got {value!r})"
        )
    return tuple(value)


def is_allowed(target: object, prefixes: Sequence[str]) -> bool:
    """Whether `target` is a dotted name inside one of the packages `prefixes`."""
    return (
        isinstance(target, str)
        and DOTTED.fullmatch(target) is not None
        and any(target == p or target.startswith(f"{p}.") for p in prefixes)
    )


def target_refusal(key: str, target: object, prefixes: Sequence[str]) -> str:
    """The one line for a `_target_` outside the allowed packages."""
    allowed = ", ".join(prefixes) or "none"
    return (
        f"{key}: {target!r} is not in a package a _target_ may name ({ALLOWED_KEY}: "
        f"{allowed}); to use your own package, add it to {WHERE} (an override cannot)"
    )


def check_overrides(overrides: Sequence[str], prefixes: Sequence[str]) -> None:
    """Refuse, before Hydra composes anything, an override that names a `_target_` outside
    `prefixes` (also inside a dict or a sweep's choices), changes `allowed_targets`, or calls
    a resolver: `${path.to.key}` references stay allowed."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as err:  # Hydra's grammar errors span lines
        raise PipelineError(" ".join(str(err).split())) from None
    problems = []
    for override in parsed:
        key = override.key_or_group
        path = [p for p in re.split(r"[./@]", f"{key}@{override.package or ''}") if p]
        if ALLOWED_KEY in path:
            problems.append(
                f"{override.input_line}: {ALLOWED_KEY} cannot be overridden; edit it in "
                "conf/config.yaml"
            )
            continue
        for name, value in _leaves(_override_values(override), key):
            if _is_target_key(name) and value is not None and not is_allowed(value, prefixes):
                problems.append(target_refusal(name, value, prefixes))
            if isinstance(value, str) and (problem := _interpolation_problem(value)):
                problems.append(f"{override.input_line}: {problem}")
            if ALLOWED_KEY in name.split("."):
                problems.append(f"{override.input_line}: {ALLOWED_KEY} cannot be overridden")
    if problems:
        raise PipelineError("; ".join(dict.fromkeys(problems)))


def guard_compositions(error: Callable[[str], Exception] = PipelineError) -> None:
    """From now on in this process, every Hydra composition checks its overrides
    (check_overrides, against the allow-list of the conf folder it composes) before composing,
    and raises `error(line)` for a refused one. For the composition no entry point of this
    project runs: `dvc exp run -S` composes in DVC's own process, which calls this from the
    Hydra plugin module it loads from the repository (.dvc/plugins/hydra_plugins/)."""
    original = ConfigLoaderImpl.load_configuration
    if getattr(original, GUARDED, False):
        return

    @functools.wraps(original)
    def load_configuration(
        self: Any, config_name: Any, overrides: Any, *args: Any, **kw: Any
    ) -> Any:
        try:
            check_overrides(list(overrides), allowed_prefixes(_primary_conf_dir(self)))
        except PipelineError as err:
            raise error(str(err)) from None
        return original(self, config_name, overrides, *args, **kw)

    setattr(load_configuration, GUARDED, True)
    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]


def _primary_conf_dir(loader: Any) -> Path:
    """The folder a Hydra config loader composes: its search path's `main` entry, a folder
    (initialize_config_dir) or a package (pkg://, initialize_config_module)."""
    for element in loader.config_search_path.get_path():
        if element.provider == "main" and element.path:
            scheme, _, where = element.path.rpartition("://")
            if scheme == "pkg":
                return Path(str(files(where.replace("/", "."))))
            return Path(where)
    raise PipelineError("Hydra's search path has no primary config folder to check against")


def check_config(raw: Mapping[str, Any], prefixes: Sequence[str], source: str) -> None:
    """Refuse a composed config (params.yaml's content) whose `_target_`s, at any depth, lie
    outside `prefixes`, whose `allowed_targets` differs from them (an override changed it), or
    that holds a `${...}` as text, which Hydra's `instantiate` would still resolve."""
    problems = []
    if list(raw.get(ALLOWED_KEY) or []) != list(prefixes):
        problems.append(
            f"{ALLOWED_KEY}: {source} has {raw.get(ALLOWED_KEY)!r}, {WHERE} {list(prefixes)!r}; "
            "set it in conf/config.yaml only"
        )
    for key, value in _leaves(raw):
        if _is_target_key(key) and not is_allowed(value, prefixes):
            problems.append(target_refusal(key, value, prefixes))
        elif isinstance(value, str) and "${" in value:
            problems.append(
                f"{key}: {value!r} holds an interpolation as text, which instantiating the "
                "config would resolve (an escaped \\${ in an override or conf/); write the "
                "value itself"
            )
    if problems:
        raise PipelineError("; ".join(problems))


def _is_target_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == TARGET_KEY


def _override_values(override: Any) -> Any:
    """What an override sets: its value, or the values a sweep over it takes (choices, glob
    patterns; a range or interval is numbers)."""
    if not override.is_sweep_override():
        return override.value()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return list(value.list)
    if isinstance(value, Glob):
        return [*value.include, *value.exclude]
    return None


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; a sweep's or list's items keep their parent's key,
    and a dict key may itself be dotted (the Optuna sweeper's `params`)."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            yield from _leaves(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item, key)
    elif isinstance(value, QuotedString):
        yield key, value.text
    else:
        yield key, value


def _interpolation_problem(text: str) -> str | None:
    """Why an override's text may not be a value: it calls a resolver (which may read outside
    the config) or escapes an interpolation (which a later resolution would run)."""
    if "${" not in text:
        return None
    advice = (
        "an override may refer to another key (${path.to.key}) but call no resolver "
        "(oc.env would copy the environment into params.yaml); set such a value in conf/"
    )
    try:
        tree = grammar_parser.parse(text)
    except Exception:  # OmegaConf's GrammarParseError: it could not resolve this either
        return f"not a valid interpolation; {advice}"
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, Grammar.InterpolationResolverContext):
            return f"calls the resolver {node.resolverName().getText()}; {advice}"
        if isinstance(node, TerminalNode):
            if node.symbol.type == Grammar.ESC_INTER:
                return f"escapes an interpolation, which a later step would resolve; {advice}"
            continue
        pending.extend(node.children or [])
    return None
