"""Typed schema of the resolved config (params.yaml), and the one-line messages for its errors."""

from __future__ import annotations

import difflib
import inspect
import math
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlpipeline.config.guard import DOTTED
from mlpipeline.config.tasks import TASKS
from mlpipeline.errors import PipelineError

# a registered model's, MLflow experiment's and image's name
PROJECT_NAME = r"^[a-z0-9][a-z0-9._-]*$"
# the extensions that name a data file's format, which a project named after it leaves out
DATA_SUFFIXES = re.compile(r"(\.(csv|tsv|txt|parquet|pq|gz|bz2|xz|zip))+$", re.IGNORECASE)


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
    """Every file or folder that more than one place reads or writes; dvc.yaml names the same
    (tests/test_dvc_yaml.py checks it). Keys beyond these are the paths of a project's own
    stages (README: a stage of your own), each a path."""

    # a project's own stage declares its paths here too, as the kit's stages do
    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Path] = Field(init=False)

    raw: Path
    ingested: Path
    prepared: Path
    data_report: Path
    features: Path
    model: Path
    history: Path
    metrics: Path
    cv: Path
    eval: Path
    figures: Path
    attributions: Path
    explain: Path
    plots: Path
    onnx: Path
    card: Path
    reference: Path
    profile: Path
    registration: Path
    weights: Path

    @model_validator(mode="after")
    def _plots_is_a_dvc_file(self) -> Paths:
        if self.plots.name != "dvc.yaml":
            raise ValueError(
                f"plots is {self.plots}: DVC reads plot definitions from files named dvc.yaml "
                "only; name one like reports/dvc.yaml"
            )
        return self

    def rebased(self, root: Path) -> Paths:
        """The same layout under `root` (a sweep trial's or a test's directory); `raw` and
        `weights` stay, as the data and weights they point at are the user's."""
        return self.model_copy(
            update={
                k: root / v for k, v in self.model_dump().items() if k not in ("raw", "weights")
            }
        )


# the kit's data sources by their former `data.source.kind`: a section that names its kind and
# no other class (or one of these) is the kit's class for that kind
SOURCE_KINDS = {
    "digits": "mlpipeline.data.sources.Digits",
    "csv": "mlpipeline.data.sources.TableFile",
    "parquet": "mlpipeline.data.sources.TableFile",
    "delta": "mlpipeline.data.sources.TableFile",
    "images": "mlpipeline.data.images.ImageFolder",
}


class Source(Target):
    """`data.source`: the data source class (a mlpipeline.data.sources.Source) and its
    arguments, checked against its signature like every `_target_` section."""

    @model_validator(mode="before")
    @classmethod
    def _kind_names_the_class(cls, value: Any) -> Any:
        if not isinstance(value, dict) or "kind" not in value:
            return value
        target, kind = value.get("_target_"), value["kind"]
        if target is not None and target not in SOURCE_KINDS.values():
            return value  # the user's own class takes its own `kind`, if any
        if kind not in SOURCE_KINDS:
            known = ", ".join(repr(k) for k in SOURCE_KINDS)
            raise ValueError(
                f"data.source.kind: {kind!r} is not one of {known}; or name your own source "
                "class in data.source._target_"
            )
        return {**value, "_target_": SOURCE_KINDS[kind]}

    @property
    def name(self) -> str:
        """How the stages' lines name the source: its kind, else its class."""
        return str(self.kwargs().get("kind") or self.target.rsplit(".", 1)[-1])


def data_name(source: Any) -> str:
    """A name for a project that sets none, from its `data.source` section (a mapping): the
    name of the file or folder it reads (`path`) without the extensions that name its format,
    else its kind or class, spelt as a registered model's name may be (PROJECT_NAME)."""
    source = source if isinstance(source, dict) else {}
    if source.get("path"):
        text = DATA_SUFFIXES.sub("", Path(str(source["path"])).name)
    else:
        text = str(source.get("kind") or str(source.get("_target_", "")).rsplit(".", 1)[-1])
    # NFKD splits an accented letter into the letter and its accent, which ascii drops
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9._-]+", "-", plain).strip("-._") or "model"


class Split(Section):
    train: float = Field(gt=0, lt=1)
    val: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)
    min_class_samples: int = Field(ge=3)
    # regression: split stratified on this many quantile bins of the target (0: by seed only)
    bins: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> Split:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"train + val + test must sum to 1, got {self.train} + {self.val} + "
                f"{self.test} = {total:g}"
            )
        return self


class NumericColumns(Section):
    impute: Literal["median", "mean", "constant"]
    fill_value: float = 0.0  # for impute: constant
    missing_indicator: bool  # one more 0/1 input per column that had missing values in train
    scale: bool  # standardise with the training split's mean and standard deviation


class CategoricalColumns(Section):
    min_frequency: int = Field(ge=1)  # rarer values share the "(other)" slot with unseen ones
    max_levels: int = Field(ge=1)  # at most this many values kept per column, the most frequent
    # integer columns with at most this many distinct values are categorical (0: numeric always)
    integer_levels: int = Field(ge=0)


class ColumnOverride(Section):
    kind: Literal["numeric", "categorical", "drop"]


class Features(Section):
    """How the features stage turns table columns into the network's inputs."""

    numeric: NumericColumns
    categorical: CategoricalColumns
    columns: dict[str, ColumnOverride] = Field(default_factory=dict)
    # the preprocessing is fitted on a seeded sample of at most this many training rows
    fit_rows: int = Field(ge=100)


class CrossValidation(Section):
    folds: int = Field(ge=0)  # 0: none; else K >= 2 folds of the training split

    @model_validator(mode="after")
    def _not_one(self) -> CrossValidation:
        if self.folds == 1:
            raise ValueError("one fold is no cross-validation: use 0 (off) or 2 and more")
        return self


class Data(Section):
    source: Source
    split: Split
    # torchvision.transforms.v2 classes applied in turn to each training image (uint8 in and out)
    augment: list[Target] = Field(default_factory=list)
    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)


class Spark(Section):
    """Where and how the Spark engine runs the table data stages (engine: spark, docs/spark.md)."""

    # local[*], or a cluster: spark://host:7077, yarn, k8s://https://..., sc://... (Spark Connect)
    master: str = Field(min_length=1)
    app_name: str = Field(min_length=1)
    # any Spark setting, passed as it is: spark.driver.memory, spark.hadoop.fs.s3a.* ...
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # a table too large to land on this machine: a seeded sample of this many rows at ingest
    sample_rows: int | None = Field(default=None, ge=1)


class Optimizer(Target):
    lr: float = Field(gt=0)


class Trainer(Target):
    max_epochs: int = Field(ge=1)


class Callbacks(BaseModel):
    """Lightning callbacks by name. The three below are the pipeline's; any other entry is a
    further callback (`+callbacks.lr_monitor._target_=lightning.pytorch.callbacks....`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Target | None] = Field(init=False)

    early_stopping: Target | None = None
    model_checkpoint: Target
    progress_bar: Target | None = None

    def extra(self) -> dict[str, Target]:
        """The further callbacks, by name."""
        return {k: v for k, v in (self.model_extra or {}).items() if v is not None}


class DataReport(Section):
    """The data report the `data_report` stage writes (paths.data_report)."""

    sample_rows: int = Field(ge=100)  # a seeded sample of at most this many rows per split
    distinct_cap: int = Field(ge=1)  # distinct values counted exactly up to this many
    top_values: int = Field(ge=1, le=200)  # categorical: the most frequent values listed
    bins: int = Field(ge=2, le=200)  # histogram bins per numeric column and target
    max_plots: int = Field(ge=0)  # column histograms drawn, the most associated first


class Evaluate(Section):
    batch_size: int = Field(ge=1)
    calibration_bins: int = Field(ge=2)
    curve_thresholds: int = Field(ge=2)
    # binary classification: the class whose precision, recall, F1 and PR-AUC are reported
    positive_class: str | None = None


class Explain(Section):
    """The `explain` stage: attributions of a seeded sample of the test split."""

    rows: int = Field(ge=1)  # test rows explained at most (a seeded sample)
    shown: int = Field(ge=1, le=32)  # images: correct and wrong rows per heatmap grid, each
    batch_size: int = Field(ge=1)  # inputs per forward pass (a perturbed input counts as one)


class Export(Section):
    opset: int = Field(ge=13)
    atol: float = Field(gt=0)
    rtol: float = Field(ge=0)  # plus rtol * |PyTorch's value|: a regression's values are large


# a Prometheus duration: 30s, 5m, 1h30m, ...
DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"


class Profile(Section):
    """The reference profile the `profile` stage writes (models/profile.json)."""

    bins: int = Field(ge=2, le=100)  # quantile bins per numeric column, statistic, score
    top_values: int = Field(ge=1, le=200)  # categorical: the most frequent values kept
    known_values: int = Field(ge=0)  # categorical: training values remembered, to count unseen
    rows: int = Field(ge=100)  # a seeded sample of at most this many training rows


class Drift(Section):
    """The population stability index, online (Prometheus's rules) and offline (make drift)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    epsilon: float = Field(gt=0, lt=0.01)
    warning: float = Field(gt=0)
    critical: float = Field(gt=0)
    window: str = Field(pattern=DURATION)
    min_rows: int = Field(ge=1)
    hold: str = Field(alias="for", pattern=DURATION)

    @model_validator(mode="after")
    def _warning_below_critical(self) -> Drift:
        if self.warning >= self.critical:
            raise ValueError(
                f"monitoring.drift.warning ({self.warning}) must be below monitoring.drift."
                f"critical ({self.critical})"
            )
        return self


class Alerts(Section):
    """The service's other alert rules: errors, refusals, latency, not scraped."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    job: str = Field(min_length=1, pattern=r"^[^\"\\]+$")
    rate_window: str = Field(pattern=DURATION)
    error_ratio: float = Field(gt=0, le=1)
    reject_ratio: float = Field(gt=0, le=1)
    latency_p99_s: float = Field(gt=0)
    hold: str = Field(alias="for", pattern=DURATION)
    down_for: str = Field(pattern=DURATION)


class Monitoring(Section):
    profile: Profile
    drift: Drift
    alerts: Alerts


class Tracking(Section):
    uri: str | None = None
    experiment: str = Field(min_length=1)
    registered_model: str = Field(min_length=1)


SWEEP_METRICS = tuple(dict.fromkeys(m for t in TASKS.values() for m in t.sweep_metrics))


class Sweep(Section):
    metric: Literal[SWEEP_METRICS]  # type: ignore[valid-type]
    direction: Literal["minimize", "maximize"]


# a Kubernetes quantity of memory (512Mi, 16Gi, 4G) and a Kubernetes object's name
MEMORY = r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class Resources(Section):
    """What one stage's container asks of the cluster: CPU cores, memory, GPUs."""

    cpu: float = Field(gt=0)
    memory: str = Field(pattern=MEMORY)
    gpu: int = Field(default=0, ge=0)


class Orchestration(Section):
    """The pipeline on a workflow engine (docs/orchestration.md): the training image its
    tasks run, the Kubernetes secret with the DVC remote's credentials, and each stage's
    resources (`default` for the stages not named)."""

    image: str = Field(default="mlpipeline-train:latest", min_length=1)
    remote_secret: str = Field(default="dvc-remote", pattern=K8S_NAME)
    resources: dict[str, Resources] = Field(
        default_factory=lambda: {"default": Resources(cpu=1, memory="4Gi")}
    )

    @model_validator(mode="after")
    def _has_a_default(self) -> Orchestration:
        if "default" not in self.resources:
            raise ValueError("orchestration.resources needs a `default` entry for other stages")
        return self

    def resources_for(self, stage: str) -> Resources:
        """The stage's resources: its own entry, else `default`."""
        return self.resources.get(stage, self.resources["default"])


class Config(Section):
    """The whole resolved configuration, as in params.yaml."""

    # null in conf/ and params.yaml: named after the data (data_name)
    project: str = Field(min_length=1, pattern=PROJECT_NAME)
    task: Literal[tuple(TASKS)]  # type: ignore[valid-type]
    # None: cross-entropy for classification, mean squared error for regression
    loss: Literal["cross_entropy", "mse", "huber"] | None = None
    seed: int = Field(ge=0)
    cpu_threads: int | None = Field(ge=1)
    # the table data stages (ingest, prepare, features): in this process, or on Spark
    engine: Literal["local", "spark"] = "local"
    spark: Spark = Spark(master="local[*]", app_name="mlpipeline")
    # the packages `_target_`s may name (mlpipeline.config.guard)
    allowed_targets: list[Annotated[str, Field(pattern=DOTTED.pattern)]]
    paths: Paths
    data: Data
    features: Features
    model: Target
    module: Target  # the LightningModule
    optimizer: Optimizer
    scheduler: Target | None
    trainer: Trainer
    callbacks: Callbacks
    cv: CrossValidation
    data_report: DataReport
    evaluate: Evaluate
    explain: Explain
    export: Export
    tracking: Tracking
    sweep: Sweep
    monitoring: Monitoring
    orchestration: Orchestration = Orchestration()

    @model_validator(mode="before")
    @classmethod
    def _named_after_the_data(cls, value: Any) -> Any:
        """`project: null` is the data's name; `tracking`'s names follow `project`."""
        if not isinstance(value, dict) or value.get("project") is not None:
            return value
        data = value.get("data")
        project = data_name(data.get("source") if isinstance(data, dict) else None)
        tracking = value.get("tracking")
        if isinstance(tracking, dict):
            names = {k: project for k in ("experiment", "registered_model") if not tracking.get(k)}
            tracking = {**tracking, **names}
        return {**value, "project": project, "tracking": tracking}

    @model_validator(mode="after")
    def _fits_the_task(self) -> Config:
        task = TASKS[self.task]
        if self.loss is not None and self.loss not in task.losses:
            other = next(t.name for t in TASKS.values() if self.loss in t.losses)
            raise ValueError(
                f"loss {self.loss} is for task {other}; use {' or '.join(task.losses)}"
            )
        if self.sweep.metric not in task.sweep_metrics:
            raise ValueError(
                f"sweep.metric {self.sweep.metric} is not one of task {self.task}'s: "
                f"{', '.join(task.sweep_metrics)}"
            )
        if self.evaluate.positive_class is not None and not task.has_classes:
            raise ValueError("evaluate.positive_class is for task classification; set it null")
        return self

    @property
    def objective(self) -> str:
        """The loss the network is trained with: the configured one, or the task's first."""
        return self.loss or TASKS[self.task].losses[0]

    def targets(self) -> dict[str, Target]:
        """Every `_target_` section by its dotted key, e.g. `callbacks.early_stopping`."""
        found = {
            "data.source": self.data.source,
            **{f"data.augment.{i}": step for i, step in enumerate(self.data.augment)},
            "model": self.model,
            "module": self.module,
            "optimizer": self.optimizer,
            "trainer": self.trainer,
        }
        if self.scheduler is not None:
            found["scheduler"] = self.scheduler
        named = {
            "early_stopping": self.callbacks.early_stopping,
            "model_checkpoint": self.callbacks.model_checkpoint,
            "progress_bar": self.callbacks.progress_bar,
            **self.callbacks.extra(),
        }
        found |= {f"callbacks.{name}": cb for name, cb in named.items() if cb is not None}
        return found

    def dump(self) -> dict[str, Any]:
        """Plain dict, `_target_` keys included: what MLflow logs and a DDP rank receives."""
        return self.model_dump(mode="json", by_alias=True)


def load_config(path: Path | str = "params.yaml") -> Config:
    """Read and validate a resolved config file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"{path} not found: run from the repository root, or compose it with "
            "`python -m mlpipeline.stages.compose`"
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
        raise PipelineError(f"{source}: " + "; ".join(dict.fromkeys(problems))) from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: dotted keys, as overrides and MLflow params name them."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def suggest(name: str, valid: list[str] | set[str]) -> str:
    """`did you mean 'x'? ` for the closest valid name, or nothing. A name is close when it
    spells the other's initials (`learning_rate` for `lr`) or differs in a few letters."""

    def initials(key: str) -> str:
        return "".join(part[:1] for part in key.split("_"))

    abbreviated = [
        v
        for v in sorted(valid)
        if ("_" in name and initials(name) == v) or ("_" in v and initials(v) == name)
    ]
    hint = abbreviated or difflib.get_close_matches(name, sorted(valid), n=1)
    return f"did you mean '{hint[0]}'? " if hint else ""


def _describe(error: dict[str, Any]) -> str:
    """One readable clause for one pydantic error: key, problem, bad value, valid choices."""
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-after")]
    key = ".".join(loc)
    kind = error["type"]
    if not key:  # a check across sections: its message names the keys
        return error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        valid = _fields_at(error["loc"][:-1])
        return f"{key}: unknown key; {suggest(loc[-1], valid)}valid: {', '.join(valid)}"
    if kind == "missing":
        # a misspelt key in a conf file shows up as the right key missing beside an unknown one
        given = error.get("input") if isinstance(error.get("input"), dict) else {}
        known = set(_fields_at(error["loc"][:-1]))
        stray = [k for k in given if k not in known and k != "_target_"]
        hint = difflib.get_close_matches(loc[-1], stray, n=1, cutoff=0.4)
        if hint:
            parent = ".".join(loc[:-1])
            return f"{parent}.{hint[0]}: unknown key; did you mean '{loc[-1]}'? ({key} is required)"
        return f"{key}: required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{key}: {msg} (got {error.get('input')!r})"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
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
