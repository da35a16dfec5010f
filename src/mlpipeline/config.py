"""Typed schema of the resolved config (params.yaml), checked before any stage does work.

Sections that name a class with `_target_` (model, optimizer, scheduler, trainer, callbacks) are
also checked against that class's signature, so a misspelt argument fails here with the valid
names rather than deep inside training.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlpipeline.errors import PipelineError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(BaseModel):
    """A `_target_` section: a dotted class path plus keyword arguments."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    target: str = Field(alias="_target_")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments: declared fields (e.g. lr) and free ones alike."""
        return {k: v for k, v in self.spec().items() if k != "_target_"}

    def spec(self) -> dict[str, Any]:
        """Plain dict with `_target_`, as Hydra's `instantiate` takes it."""
        return self.model_dump(mode="json", by_alias=True)


class Paths(Section):
    raw: Path
    ingested: Path
    prepared: Path
    model: Path
    onnx: Path
    card: Path
    reference: Path
    reports: Path


class DigitsSource(Section):
    kind: Literal["digits"]


class TableSource(Section):
    kind: Literal["csv", "parquet"]
    path: Path
    label: str = Field(min_length=1)
    features: list[str] | None = None


class Split(Section):
    train: float = Field(gt=0, lt=1)
    val: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)
    min_class_samples: int = Field(ge=3)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> Split:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"train + val + test must sum to 1, got {self.train} + {self.val} + "
                f"{self.test} = {total:g}"
            )
        return self


class Data(Section):
    source: Annotated[DigitsSource | TableSource, Field(discriminator="kind")]
    split: Split
    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)


class Optimizer(Target):
    lr: float = Field(gt=0)


class Trainer(Target):
    max_epochs: int = Field(ge=1)


class Callbacks(Section):
    early_stopping: Target | None = None
    model_checkpoint: Target
    progress_bar: Target | None = None


class Evaluate(Section):
    batch_size: int = Field(ge=1)
    calibration_bins: int = Field(ge=2)
    curve_thresholds: int = Field(ge=2)


class Export(Section):
    opset: int = Field(ge=13)
    atol: float = Field(gt=0)


class Tracking(Section):
    uri: str | None = None
    experiment: str = Field(min_length=1)
    registered_model: str = Field(min_length=1)


class Sweep(Section):
    metric: Literal["val_loss", "val_acc", "val_f1"]
    direction: Literal["minimize", "maximize"]


class Config(Section):
    """The whole resolved configuration, as in params.yaml."""

    seed: int = Field(ge=0)
    cpu_threads: int | None = Field(ge=1)
    paths: Paths
    data: Data
    model: Target
    optimizer: Optimizer
    scheduler: Target | None
    trainer: Trainer
    callbacks: Callbacks
    evaluate: Evaluate
    export: Export
    tracking: Tracking
    sweep: Sweep

    def targets(self) -> dict[str, Target]:
        """Every `_target_` section by its dotted key, e.g. `callbacks.early_stopping`."""
        found = {"model": self.model, "optimizer": self.optimizer, "trainer": self.trainer}
        if self.scheduler is not None:
            found["scheduler"] = self.scheduler
        for name in ("early_stopping", "model_checkpoint"):
            if (cb := getattr(self.callbacks, name)) is not None:
                found[f"callbacks.{name}"] = cb
        return found


# Arguments the code passes itself, so the config must not set them.
SUPPLIED_BY_CODE = {
    "model": {"in_shape", "num_classes"},
    "optimizer": {"params"},
    "scheduler": {"optimizer"},
    "trainer": {"callbacks", "logger", "default_root_dir", "enable_checkpointing"},
    "callbacks.model_checkpoint": {"dirpath", "filename"},
}


def load_config(path: Path | str = "params.yaml") -> Config:
    """Read and validate a resolved config file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"{path} not found: run from the repository root, or compose it with "
            "`python -m mlpipeline.compose`"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML: {err}".replace("\n", " ")) from None
    return validate_config(raw, source=str(path))


def validate_config(raw: Any, source: str = "config") -> Config:
    """Validate a plain dict against the schema; raise PipelineError naming every bad key."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: expected a mapping at the top level, got {raw!r}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
        raise PipelineError(f"{source}: " + "; ".join(problems)) from None


def check_targets(cfg: Config) -> None:
    """Check that each `_target_` imports and accepts the keys given for it."""
    problems = []
    for key, section in cfg.targets().items():
        try:
            obj = locate(section.target)
        except PipelineError as err:
            problems.append(f"{key}._target_: {err}")
            continue
        params = inspect.signature(obj).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        valid = set(params) - SUPPLIED_BY_CODE.get(key, set()) - {"self"}
        for name in section.kwargs():
            if name not in valid:
                hint = difflib.get_close_matches(name, valid, n=1)
                maybe = f"did you mean '{hint[0]}'? " if hint else ""
                problems.append(
                    f"{key}.{name}: {section.target} takes no argument '{name}'; {maybe}"
                    f"valid: {', '.join(sorted(valid))}"
                )
    if problems:
        raise PipelineError("; ".join(problems))


def locate(dotted: str) -> Any:
    """Import `package.module.Attr` and return the attribute."""
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise PipelineError(f"cannot import '{dotted}'; check the dotted path") from None


def _describe(error: dict[str, Any]) -> str:
    """One readable clause for one pydantic error: key, problem, bad value, valid choices."""
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-after")]
    # drop discriminator tags pydantic inserts into the location (e.g. data.source.csv.path)
    loc = [p for p in loc if p not in {"digits", "csv", "parquet"}]
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = _fields_at(error["loc"][:-1])
        hint = difflib.get_close_matches(loc[-1], valid, n=1)
        maybe = f"did you mean '{hint[0]}'? " if hint else ""
        return f"{key}: unknown key; {maybe}valid: {', '.join(valid)}"
    if kind == "missing":
        return f"{key}: required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{key}: {msg} (got {error.get('input')!r})"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    tagged = {"digits": DigitsSource, "csv": TableSource, "parquet": TableSource}
    model: Any = Config
    for part in loc:
        if part in tagged:
            model = tagged[part]
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    return sorted(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _model_in(arg)) is not None:
            return found
    return None
