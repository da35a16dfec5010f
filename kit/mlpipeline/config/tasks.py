"""The task (`task` in conf/config.yaml: classification or regression) as one object, chosen
once by `task_for`, holding everything outside the LightningModule that differs by task: the
label's encoding, the split's strata, the metrics and plot files of `evaluate`, the exported
model's head and output, the export check, the profile's prediction bins, the sweep metrics.

The stages call these methods and never test which task they run (tests/test_architecture.py).
A new task is one subclass here and its name in `TASKS`. Lives in the config package, as
`task` is a config value and every stage depends on the config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlpipeline.errors import PipelineError
from mlpipeline.plots import HISTORY, Plot

MAX_CLASSES_OF_NUMBERS = 50  # more distinct numeric labels than this look like a regression
EXPORT_FIX = "try another export.opset or loosen export.atol / export.rtol"


class Task:
    """What differs by task, outside the LightningModule."""

    name: ClassVar[str]
    output: ClassVar[str]  # the exported model's output name
    losses: ClassVar[tuple[str, ...]]  # the losses that fit it; the first is the default
    sweep_metrics: ClassVar[tuple[str, ...]]  # the validation metrics a sweep may optimise
    plots: ClassVar[tuple[Plot, ...]]  # its panels in `dvc plots` and its PNGs
    has_classes: ClassVar[bool]  # whether the label's values are classes
    explained_as: ClassVar[str]  # what the explain stage attributes, in words
    outcomes: ClassVar[tuple[str, str]]  # the rows `well_predicted` splits into, as grids name them

    @property
    def files(self) -> list[str]:
        """The evaluate files (keys of mlpipeline.plots.EVAL_PLOTS) its plots read, which its
        `evaluate` fills: the stage writes these and no other."""
        return list(dict.fromkeys(p.source for p in self.plots if p.source != HISTORY))

    def output_size(self, classes: list[str] | None) -> int:
        """How many values the network outputs per row."""
        raise NotImplementedError

    def encode_labels(self, values: Any, label: str) -> tuple[np.ndarray, list[str] | None]:
        """The label column (pyarrow) as the training targets, and the class names if any;
        PipelineError when the label does not fit the task."""
        raise NotImplementedError

    def check_labels(
        self, y: np.ndarray, classes: list[str] | None, split: Any, label: str = "label"
    ) -> None:
        """Refuse labels (of the column `label`) that the split or the training cannot use."""
        raise NotImplementedError

    def strata(self, y: np.ndarray, split: Any) -> np.ndarray | None:
        """The groups a split keeps in proportion (None: by seed only)."""
        raise NotImplementedError

    def split_problem(self, rows: int, split: Any, err: Exception) -> str:
        """The one line for a split that scikit-learn refused."""
        raise NotImplementedError

    def target_meta(self, y_train: np.ndarray) -> dict[str, Any]:
        """What prepared/meta.json adds about the training targets."""
        return {}

    def predict(self, network: Any, x: Any, batch_size: int = 1024) -> Any:
        """The network's outputs on a float32 array, in batches, on the CPU (torch.Tensor)."""
        raise NotImplementedError

    def head(self) -> Any:
        """The torch module the exported model puts after the network."""
        raise NotImplementedError

    def output_shape(self, classes: list[str] | None) -> list[int | None]:
        """The exported output's shape, batch axis first."""
        raise NotImplementedError

    def compare(
        self, onnx_out: np.ndarray, torch_out: np.ndarray, atol: float, rtol: float
    ) -> tuple[float, int, int]:
        """The largest difference, how many values differ beyond atol + rtol * |torch|, and
        how many rows disagree on the class (0 where there are no classes)."""
        diff = np.abs(onnx_out - torch_out)
        largest = float(diff.max()) if len(diff) else 0.0
        return largest, int((diff > atol + rtol * np.abs(torch_out)).sum()), 0

    def output_scale(self, meta: dict[str, Any]) -> float:
        """The outputs' typical size, which export.atol is a fraction of, so that float32's
        rounding passes the export check on any scale (features/meta.json is `meta`)."""
        return 1.0

    def disagreement(
        self, case: str, compared: tuple[float, int, int], atol: float, rtol: float, scale: float
    ) -> str:
        """The one line for an export check that failed on `case` (`compared`: `compare`'s
        result with the tolerance `atol` x `scale` + `rtol` x |value|)."""
        raise NotImplementedError

    def evaluate(
        self, outputs: Any, y: np.ndarray, classes: list[str] | None, settings: Any, shown: Any
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """The test metrics and the rows of the plot files this task fills (`settings`: the
        config's `evaluate` section; `shown`: the test rows the per-sample plots show)."""
        raise NotImplementedError

    def profile_prediction(
        self, profile: Any, outputs: np.ndarray, classes: list[str] | None, bins: int
    ) -> Any:
        """The profile's reference for the model's predictions, built with `profile`, the
        module mlpipeline.serving.profile (passed in: the core imports no layer above it)."""
        raise NotImplementedError

    def label_report(
        self, labels: dict[str, np.ndarray], classes: list[str] | None, bins: int
    ) -> dict[str, dict[str, Any]]:
        """The data report's label per split (`labels`: split -> its encoded labels, train
        first): class shares, or the target's distribution."""
        raise NotImplementedError

    def numeric_association(self, values: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """How strongly a numeric column (present values only) goes with the label, 0..1:
        {"measure": its name, "value": it}."""
        raise NotImplementedError

    def categorical_association(self, codes: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """How strongly a categorical column (`codes`: one integer per value, missing one of
        them) goes with the label, 0..1: {"measure": its name, "value": it}."""
        raise NotImplementedError

    def sample_losses(self, outputs: Any, y: np.ndarray) -> np.ndarray:
        """Each test row's loss (float64), as the task measures it."""
        raise NotImplementedError

    def labels(
        self, outputs: Any, y: np.ndarray, classes: list[str] | None, row: int
    ) -> tuple[str, str]:
        """Row `row`'s true and predicted label, as a figure shows them."""
        raise NotImplementedError

    def explained_output(self, network: Any) -> Any:
        """The function of the network's input whose attributions the explain stage computes:
        one value per row and class, or per row."""
        raise NotImplementedError

    def explained_target(self, outputs: Any) -> Any:
        """Captum's `target` for rows whose unperturbed `predict` outputs are `outputs`: which
        of `explained_output`'s values is explained per row (None: its only one)."""
        return None

    def well_predicted(self, outputs: Any, y: np.ndarray) -> np.ndarray:
        """Which rows count as well predicted (bool per row) in the heatmap grids, whose
        titles `outcomes` names (well predicted first)."""
        raise NotImplementedError

    def largest_losses(
        self, outputs: Any, y: np.ndarray, classes: list[str] | None, count: int
    ) -> list[tuple[int, str, str]]:
        """The `count` test rows with the largest loss, largest first (ties by row): (row,
        true label, predicted label)."""
        order = np.argsort(-self.sample_losses(outputs, y), kind="stable")[:count]
        return [(int(i), *self.labels(outputs, y, classes, int(i))) for i in order]


class Classification(Task):
    """The label's values are classes; the network outputs a score per class."""

    name = "classification"
    output = "probabilities"
    losses = ("cross_entropy",)
    sweep_metrics = ("val_loss", "val_acc", "val_f1")
    plots = (
        Plot("loss", "Loss", HISTORY, "epoch", ("train_loss", "val_loss")),
        Plot("accuracy", "Accuracy", HISTORY, "epoch", ("train_acc", "val_acc")),
        Plot("confusion", "Confusion matrix (test)", "confusion", "predicted", ("actual",),
             "confusion"),
        Plot("roc", "ROC (micro, test)", "roc", "fpr", ("tpr",), "simple"),
        Plot("pr", "Precision-recall (micro, test)", "pr", "recall", ("precision",), "simple"),
        Plot("f1_per_class", "F1 per class (test)", "per_class", "f1", ("class",),
             "bar_horizontal"),
    )  # fmt: skip
    has_classes = True
    explained_as = "the probability (softmax) of the class predicted on the unperturbed input"
    outcomes = ("Correct predictions", "Wrong predictions")

    def output_size(self, classes: list[str] | None) -> int:
        return len(classes or [])

    def encode_labels(self, values: Any, label: str) -> tuple[np.ndarray, list[str] | None]:
        """Class indices in natural order (numbers by value, text alphabetically)."""
        # pyarrow takes a second to import; compose and evaluate import this module without it
        import pyarrow as pa
        import pyarrow.compute as pc

        numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
        distinct = values.unique()
        if numeric and len(distinct) > MAX_CLASSES_OF_NUMBERS:
            raise PipelineError(
                f"label '{label}' has {len(distinct)} distinct numeric values, too many for "
                "classes: for a numeric target set task=regression (or bin it into classes first)"
            )
        order = sorted(distinct.to_pylist(), key=lambda v: v if numeric else str(v))
        names = [_class_name(v) for v in order]
        codes = pc.index_in(values, value_set=pa.array(order, type=values.type))
        return codes.to_numpy(zero_copy_only=False).astype(np.int64), names

    def check_labels(
        self, y: np.ndarray, classes: list[str] | None, split: Any, label: str = "label"
    ) -> None:
        """Refuse a single class, or classes too small for a stratified split."""
        classes = classes or []
        counts = np.bincount(y, minlength=len(classes))
        if (counts > 0).sum() < 2:
            raise PipelineError(
                f"only one class ({classes[int(np.argmax(counts))]}): need at least 2"
            )
        small = [(classes[i], int(c)) for i, c in enumerate(counts) if c < split.min_class_samples]
        if small:
            listed = ", ".join(f"'{name}' has {n}" for name, n in small)
            raise PipelineError(
                f"too few samples per class for a stratified split: {listed}; each class needs "
                f"at least {split.min_class_samples} (data.split.min_class_samples): add "
                "samples or drop those classes"
            )

    def strata(self, y: np.ndarray, split: Any) -> np.ndarray | None:
        return y

    def split_problem(self, rows: int, split: Any, err: Exception) -> str:
        return (
            f"cannot split {rows} samples stratified as train/val/test = "
            f"{split.train}/{split.val}/{split.test}: {err}; add data or enlarge data.split.val "
            "and data.split.test"
        )

    def predict(self, network: Any, x: Any, batch_size: int = 1024) -> Any:
        """Softmax probabilities."""
        # torch takes seconds to import, and every stage imports this module, most without it
        import torch

        x = torch.as_tensor(x, dtype=torch.float32)
        with torch.inference_mode():
            parts = [
                network(x[i : i + batch_size]).softmax(dim=1) for i in range(0, len(x), batch_size)
            ]
        return torch.cat(parts)

    def head(self) -> Any:
        # torch takes seconds to import, and every stage imports this module, most without it
        import torch

        return torch.nn.Softmax(dim=1)

    def output_shape(self, classes: list[str] | None) -> list[int | None]:
        return [None, len(classes or [])]

    def compare(
        self, onnx_out: np.ndarray, torch_out: np.ndarray, atol: float, rtol: float
    ) -> tuple[float, int, int]:
        largest, beyond, _ = super().compare(onnx_out, torch_out, atol, rtol)
        return largest, beyond, int((onnx_out.argmax(1) != torch_out.argmax(1)).sum())

    def disagreement(
        self, case: str, compared: tuple[float, int, int], atol: float, rtol: float, scale: float
    ) -> str:
        """Probabilities beyond the tolerance, and rows with another predicted class."""
        largest, beyond, mismatched = compared
        return (
            f"ONNX model disagrees with PyTorch on the {case}: {beyond} probabilities differ "
            f"by more than export.atol {atol:g} + export.rtol {rtol:g} x |value| (largest "
            f"difference {largest:.2e}) and {mismatched} rows get another predicted class; "
            f"{EXPORT_FIX}"
        )

    def evaluate(
        self, outputs: Any, y: np.ndarray, classes: list[str] | None, settings: Any, shown: Any
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """Accuracy, macro scores, AUROC, calibration, log loss (and a positive class's
        scores); the confusion, ROC, PR and per-class files."""
        classes = classes or []
        result = compute_metrics(
            outputs, y, classes, settings.calibration_bins, settings.curve_thresholds
        )
        scalars = result["scalars"]
        if (positive := settings.positive_class) is not None:
            if positive not in classes or len(classes) != 2:
                raise PipelineError(
                    f"evaluate.positive_class {positive!r} needs a binary task with that "
                    f"class; the classes are {classes}"
                )
            extra = positive_class_metrics(
                outputs, y, classes.index(positive), settings.curve_thresholds
            )
            scalars = scalars | {k: round(float(v), 6) for k, v in extra.items()}
        predicted = result["predicted"]
        files = {
            "confusion": [
                {"actual": classes[y[i]], "predicted": classes[predicted[i]]} for i in shown
            ],
            "roc": result["roc"],
            "pr": result["pr"],
            "per_class": result["per_class"],
        }
        return scalars, files

    def label_report(
        self, labels: dict[str, np.ndarray], classes: list[str] | None, bins: int
    ) -> dict[str, dict[str, Any]]:
        """Each class's share of the split's rows."""
        names = classes or []
        return {
            split: {
                "classes": dict(
                    zip(names, _shares(np.bincount(y, minlength=len(names))), strict=True)
                )
            }
            for split, y in labels.items()
        }

    def numeric_association(self, values: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """The correlation ratio (eta) of the column's values grouped by class."""
        return {"measure": "correlation ratio (eta)", "value": correlation_ratio(values, y)}

    def categorical_association(self, codes: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Cramér's V of the column's values against the classes."""
        return {"measure": "Cramér's V", "value": cramers_v(codes, y)}

    def profile_prediction(
        self, profile: Any, outputs: np.ndarray, classes: list[str] | None, bins: int
    ) -> Any:
        """The predicted classes' shares."""
        return profile.class_prediction([str(c) for c in classes or []], outputs)

    def sample_losses(self, outputs: Any, y: np.ndarray) -> np.ndarray:
        """Cross-entropy: minus the log of the true class's probability."""
        probs = np.asarray(outputs, dtype=np.float64)
        return -np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))

    def explained_output(self, network: Any) -> Any:
        """The class probabilities."""
        return lambda x: network(x).softmax(dim=1)

    def explained_target(self, outputs: Any) -> Any:
        """The class predicted on the unperturbed row."""
        return outputs.argmax(dim=1)

    def well_predicted(self, outputs: Any, y: np.ndarray) -> np.ndarray:
        """The predicted class is the true one."""
        return np.asarray(outputs.argmax(dim=1)) == np.asarray(y)

    def labels(
        self, outputs: Any, y: np.ndarray, classes: list[str] | None, row: int
    ) -> tuple[str, str]:
        """The class names, the predicted one with its probability."""
        names, probs = classes or [], np.asarray(outputs[row])
        best = int(probs.argmax())
        return names[int(y[row])], f"{names[best]} ({probs[best]:.2f})"


class Regression(Task):
    """A numeric label; the network outputs one value per row."""

    name = "regression"
    output = "prediction"
    losses = ("mse", "huber")
    sweep_metrics = ("val_loss", "val_mae", "val_rmse", "val_r2")
    plots = (
        Plot("loss", "Loss", HISTORY, "epoch", ("train_loss", "val_loss")),
        Plot("validation_error", "Validation error", HISTORY, "epoch", ("val_mae", "val_rmse")),
        Plot("predicted_vs_actual", "Predicted vs actual (test)", "predictions", "actual",
             ("predicted",), "scatter"),
        Plot("residuals", "Residuals (test)", "predictions", "predicted", ("residual",),
             "scatter"),
    )  # fmt: skip
    has_classes = False
    explained_as = "the predicted value"
    outcomes = ("Errors up to the median", "Errors above the median")

    def output_size(self, classes: list[str] | None) -> int:
        return 1

    def encode_labels(self, values: Any, label: str) -> tuple[np.ndarray, list[str] | None]:
        """float32 targets."""
        # pyarrow takes a second to import; compose and evaluate import this module without it
        import pyarrow as pa

        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            sample = values.drop_null().unique()[:3].to_pylist()
            raise PipelineError(
                f"label '{label}' is not numeric (values like {sample}): task regression "
                "needs a number to predict; for classes set task=classification"
            )
        return values.to_numpy(zero_copy_only=False).astype(np.float32), None

    def check_labels(
        self, y: np.ndarray, classes: list[str] | None, split: Any, label: str = "label"
    ) -> None:
        if not np.isfinite(y).all():
            raise PipelineError(f"label '{label}' has infinite values: fix or drop those rows")

    def strata(self, y: np.ndarray, split: Any) -> np.ndarray | None:
        """`split.bins` quantile bins of the target, when that is more than 1."""
        if split.bins <= 1:
            return None
        edges = np.quantile(y, np.linspace(0, 1, split.bins + 1)[1:-1])
        return np.digitize(y, edges)

    def split_problem(self, rows: int, split: Any, err: Exception) -> str:
        return (
            f"cannot split {rows} rows as train/val/test = {split.train}/{split.val}/"
            f"{split.test} with data.split.bins={split.bins}: {err}; lower data.split.bins"
        )

    def target_meta(self, y_train: np.ndarray) -> dict[str, Any]:
        """The training targets' mean and std: the network learns the standardised target
        and its last layer scales it back."""
        train_y = y_train.astype(np.float64)
        return {"target": {"mean": float(train_y.mean()), "std": float(train_y.std() or 1.0)}}

    def predict(self, network: Any, x: Any, batch_size: int = 1024) -> Any:
        """The predicted values, one per row."""
        # torch takes seconds to import, and every stage imports this module, most without it
        import torch

        x = torch.as_tensor(x, dtype=torch.float32)
        with torch.inference_mode():
            parts = [
                network(x[i : i + batch_size]).squeeze(1) for i in range(0, len(x), batch_size)
            ]
        return torch.cat(parts)

    def head(self) -> Any:
        # torch takes seconds to import, and every stage imports this module, most without it
        import torch

        return torch.nn.Flatten(start_dim=0)

    def output_shape(self, classes: list[str] | None) -> list[int | None]:
        return [None]

    def output_scale(self, meta: dict[str, Any]) -> float:
        """The training targets' standard deviation: the network's float32 rounding, on the
        standardised target, is scaled back by it."""
        return float(meta.get("target", {}).get("std", 1.0))

    def disagreement(
        self, case: str, compared: tuple[float, int, int], atol: float, rtol: float, scale: float
    ) -> str:
        """Predictions beyond the tolerance, in the target's units."""
        largest, beyond, _ = compared
        return (
            f"ONNX model disagrees with PyTorch on the {case}: {beyond} predictions differ by "
            f"more than export.atol {atol:g} x the training target's std {scale:.4g} + "
            f"export.rtol {rtol:g} x |value| (largest difference {largest:.2e}); {EXPORT_FIX}"
        )

    def evaluate(
        self, outputs: Any, y: np.ndarray, classes: list[str] | None, settings: Any, shown: Any
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """MAE, RMSE and R^2; the predicted-vs-actual file."""
        rows = [
            {
                "actual": round(float(a), 6),
                "predicted": round(float(p), 6),
                "residual": round(float(p - a), 6),
            }
            for a, p in zip(y[shown], outputs.numpy()[shown], strict=True)
        ]
        return regression_metrics(outputs, y), {"predictions": rows}

    def label_report(
        self, labels: dict[str, np.ndarray], classes: list[str] | None, bins: int
    ) -> dict[str, dict[str, Any]]:
        """The target's mean, standard deviation, quantiles, and histogram on `bins` bins
        spanning the training split's range, the same edges for every split."""
        train = np.asarray(labels["train"], dtype=np.float64)
        edges = np.histogram_bin_edges(train, bins) if len(train) else np.linspace(0, 1, bins + 1)
        report = {}
        for split, y in labels.items():
            y = np.asarray(y, dtype=np.float64)
            counts = np.histogram(np.clip(y, edges[0], edges[-1]), edges)[0]
            report[split] = {
                "mean": float(y.mean()) if len(y) else None,
                "std": float(y.std()) if len(y) else None,
                "quantiles": quantiles(y),
                "histogram": {"edges": edges.tolist(), "shares": _shares(counts)},
            }
        return report

    def numeric_association(self, values: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """The absolute Pearson correlation of the column and the target."""
        values, y = np.asarray(values, np.float64), np.asarray(y, np.float64)
        if len(y) < 2 or values.std() == 0 or y.std() == 0:
            return {"measure": "|Pearson r|", "value": 0.0}
        value = abs(float(np.corrcoef(values, y)[0, 1]))
        return {"measure": "|Pearson r|", "value": value}

    def categorical_association(self, codes: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """The correlation ratio (eta) of the target grouped by the column's values."""
        return {"measure": "correlation ratio (eta)", "value": correlation_ratio(y, codes)}

    def profile_prediction(
        self, profile: Any, outputs: np.ndarray, classes: list[str] | None, bins: int
    ) -> Any:
        """The predicted values' quantile bins."""
        return profile.score_prediction(outputs, bins)

    def sample_losses(self, outputs: Any, y: np.ndarray) -> np.ndarray:
        """The squared error."""
        return (np.asarray(outputs, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2

    def explained_output(self, network: Any) -> Any:
        """The predicted values, one per row."""
        return lambda x: network(x).squeeze(1)

    def well_predicted(self, outputs: Any, y: np.ndarray) -> np.ndarray:
        """The absolute error is at most the sample's median one."""
        errors = np.abs(np.asarray(outputs, dtype=np.float64) - np.asarray(y, dtype=np.float64))
        return errors <= np.median(errors) if len(errors) else errors.astype(bool)

    def labels(
        self, outputs: Any, y: np.ndarray, classes: list[str] | None, row: int
    ) -> tuple[str, str]:
        """The values, to four significant digits."""
        return f"{float(y[row]):.4g}", f"{float(outputs[row]):.4g}"


# the quantiles the data report gives of a numeric column or target
QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95,
             "p99": 0.99}  # fmt: skip


def quantiles(values: np.ndarray) -> dict[str, float | None]:
    """QUANTILES of `values` (finite floats); None each when there are none."""
    if not len(values):
        return dict.fromkeys(QUANTILES)
    found = np.quantile(values, list(QUANTILES.values()))
    return {name: float(v) for name, v in zip(QUANTILES, found, strict=True)}


def _shares(counts: np.ndarray) -> list[float]:
    return (np.asarray(counts, np.float64) / max(int(np.sum(counts)), 1)).tolist()


def correlation_ratio(values: np.ndarray, groups: np.ndarray) -> float:
    """Eta: the square root of the share of `values`' variance that lies between the means
    of `groups` (integer codes); 0 for constant values or fewer than two rows."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    _, codes = np.unique(groups, return_inverse=True)
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=values) / counts
    total = float(((values - values.mean()) ** 2).sum())
    between = float((counts * (means - values.mean()) ** 2).sum())
    return float(np.sqrt(between / total)) if total > 0 else 0.0


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two integer-coded variables (no bias correction); 0 when either has a
    single value."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    rows, columns = a.max(initial=-1) + 1, b.max(initial=-1) + 1
    if min(rows, columns) < 2:
        return 0.0
    table = np.zeros((rows, columns), dtype=np.float64)
    np.add.at(table, (a, b), 1.0)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (table.sum() * (min(rows, columns) - 1))))


TASKS: dict[str, type[Task]] = {t.name: t for t in (Classification, Regression)}


def task_for(name: str) -> Task:
    """The task object for `cfg.task`."""
    if name not in TASKS:
        raise PipelineError(f"task {name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]()


def _class_name(value: Any) -> str:
    """2.0 reads as '2', True as 'true': the names a client of the service sees."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def compute_metrics(
    probs: Any, target: Any, classes: list[str], calibration_bins: int, thresholds: int
) -> dict[str, Any]:
    """Scalar metrics, per-class scores, confusion matrix and curves from test probabilities."""
    # torch and torchmetrics take seconds to import, and only evaluate computes metrics
    import torch
    import torchmetrics.functional.classification as M

    n = len(classes)
    target = torch.as_tensor(target)
    common = {"num_classes": n}
    scalars = {
        "accuracy": M.multiclass_accuracy(probs, target, average="micro", **common),
        "precision_macro": M.multiclass_precision(probs, target, average="macro", **common),
        "recall_macro": M.multiclass_recall(probs, target, average="macro", **common),
        "f1_macro": M.multiclass_f1_score(probs, target, average="macro", **common),
        "auroc_macro": M.multiclass_auroc(probs, target, average="macro", **common),
        "calibration_error": M.multiclass_calibration_error(
            probs, target, n_bins=calibration_bins, **common
        ),
        "log_loss": torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), target),
    }
    per_class = {
        "precision": M.multiclass_precision(probs, target, average=None, **common),
        "recall": M.multiclass_recall(probs, target, average=None, **common),
        "f1": M.multiclass_f1_score(probs, target, average=None, **common),
    }
    support = torch.bincount(target, minlength=n)
    fpr, tpr, _ = M.multiclass_roc(probs, target, thresholds=thresholds, average="micro", **common)
    precision, recall, _ = M.multiclass_precision_recall_curve(
        probs, target, thresholds=thresholds, average="micro", **common
    )
    return {
        "scalars": {k: round(float(v), 6) for k, v in scalars.items()}
        | {"test_samples": len(target)},
        "per_class": [
            {
                "class": c,
                **{k: round(float(v[i]), 6) for k, v in per_class.items()},
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        ],
        "confusion": M.multiclass_confusion_matrix(probs, target, **common).tolist(),
        "predicted": probs.argmax(dim=1).tolist(),
        "roc": [
            {"fpr": round(float(a), 6), "tpr": round(float(b), 6)}
            for a, b in zip(fpr, tpr, strict=False)
        ],
        "pr": [
            {"recall": round(float(r), 6), "precision": round(float(p), 6)}
            for r, p in zip(recall, precision, strict=False)
        ],
    }


def positive_class_metrics(probs: Any, target: Any, positive: int, thresholds: int) -> dict:
    """Precision, recall, F1 and PR-AUC of one class of a binary task."""
    # torch and torchmetrics take seconds to import, and only evaluate computes metrics
    import torch
    import torchmetrics.functional.classification as M

    score, truth = probs[:, positive], (torch.as_tensor(target) == positive).long()
    return {
        "positive_precision": M.binary_precision(score, truth),
        "positive_recall": M.binary_recall(score, truth),
        "positive_f1": M.binary_f1_score(score, truth),
        "positive_pr_auc": M.binary_average_precision(score, truth, thresholds=thresholds),
    }


def regression_metrics(predicted: Any, target: Any) -> dict[str, float]:
    """MAE, RMSE and R^2 on the test split."""
    # torch and torchmetrics take seconds to import, and only evaluate computes metrics
    import torch
    import torchmetrics.functional as M

    target = torch.as_tensor(target)
    return {
        "mae": round(float(M.mean_absolute_error(predicted, target)), 6),
        "rmse": round(float(M.mean_squared_error(predicted, target, squared=False)), 6),
        "r2": round(float(M.r2_score(predicted, target)), 6),
        "test_samples": len(target),
    }
