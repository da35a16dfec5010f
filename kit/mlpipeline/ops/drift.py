"""The offline drift check: a batch of records against the reference profile, with the
definition the service and Prometheus's rules use (serving.profile: the same bins, the same
PSI, the same thresholds from conf/monitoring).

    python -m mlpipeline.ops.drift new.csv        (or: make drift DATA=new.csv)

DATA: a CSV or Parquet file with the model's input columns (as clients send them; other
columns, the label among them, are ignored) for a table model; for an image model a .npy array
of images (examples first), or, for a model that takes image files, a folder of them (in
subfolders or not; files of other suffixes are ignored), decoded as the pipeline and the
service decode them (mlpipeline.imaging, with the model card's `input.image`). Prints each
column's PSI and its status, and exits 1 when any is above monitoring.drift.critical, so that
a workflow can gate retraining or promotion on it; bad input: one `error:` line, exit 1.
Predictions are not scored here (that needs the model): the service's counters and rules score
them online.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import read_json
from mlpipeline.config import load_config
from mlpipeline.data.features import number_values, text_values
from mlpipeline.data.sources import read_table
from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.imaging import IMAGE_SUFFIXES, ImageError, ImageShape, decode
from mlpipeline.serving import profile as bins

SHOWN_BAD_FILES = 3  # the bad image files a refusal names; it counts the rest


@dataclass(frozen=True)
class Score:
    """One column's PSI against the reference, and what it means."""

    column: str
    psi: float
    status: str  # "ok", "warning" or "critical"


def _status(value: float, warning: float, critical: float) -> str:
    return "critical" if value > critical else "warning" if value > warning else "ok"


def read_batch(path: Path, card: Path) -> Any:
    """The batch at `path`: an Arrow table (CSV, Parquet), a numpy array (.npy), or a folder
    of image files decoded as the model card at `card` says."""
    if path.is_dir():
        return read_image_folder(path, card)
    if not path.is_file():
        raise PipelineError(
            f"{path} not found: give DATA=<a CSV, Parquet or .npy file, or a folder of images>"
        )
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise PipelineError(f"cannot read {path} as a numpy array: {err}") from None
    return read_table(path, "parquet" if path.suffix == ".parquet" else "csv")


def read_image_folder(folder: Path, card: Path) -> np.ndarray:
    """Every image file under `folder` (by suffix, in path order) as uint8 (N, C, H, W),
    decoded and resized as the model card's `input.image` says; a file that is not a usable
    image is refused, named."""
    if not card.is_file():
        raise PipelineError(f"model card not found at {card}: run `dvc repro` (export writes it)")
    image = read_json(card)["input"].get("image")
    if not image:
        raise PipelineError(
            f"{folder} is a folder, and the model takes arrays, not image files: give a .npy "
            "array of its inputs, examples first"
        )
    shape = ImageShape(image["channels"], image["height"], image["width"], image["resize"])
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PipelineError(
            f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}): give a folder of them"
        )
    batch = np.empty((len(files), *shape.array_shape), np.uint8)
    bad = []
    for i, path in enumerate(files):
        try:
            batch[i] = decode(path, shape)
        except ImageError as err:
            bad.append(f"{path.relative_to(folder)} ({err})")
    if bad:
        more = f" and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else ""
        raise PipelineError(
            f"{len(bad)} of {len(files)} files under {folder} are not usable images: "
            f"{', '.join(bad[:SHOWN_BAD_FILES])}{more}; remove or replace them"
        )
    return batch


def column_counts(profile: bins.Profile, batch: Any, source: Path) -> dict[str, np.ndarray]:
    """Per profiled column, the batch's counts per reference bin."""
    counts: dict[str, np.ndarray] = {}
    if profile.input != "records":  # an array: a tensor, or decoded image files
        if not isinstance(batch, np.ndarray) or batch.ndim < 2 or not batch.size:
            raise PipelineError(
                f"{source}: the model takes images: give a .npy array of them, examples first"
                + (", or a folder of image files" if profile.input == "image" else "")
            )
        # in the network input's units and precision, as the profile binned them: uint8 pixels
        # as they are, other numbers as float32
        pixels = batch.dtype == np.uint8
        stats = bins.image_statistics(batch if pixels else batch.astype(np.float32, copy=False))
        for column in profile.columns:
            assert isinstance(column, bins.NumericColumn)  # image statistics are numeric
            key = (column.statistic or "mean", column.channel or 0)
            if key not in stats:
                raise PipelineError(f"{source}: no channel {key[1]} in arrays of {batch.shape}")
            counts[column.name] = bins.NumericBinner(column).counts(stats[key])
        return counts
    if isinstance(batch, np.ndarray):
        raise PipelineError(f"{source}: the model takes records: give a CSV or Parquet file")
    names = [c.name for c in profile.columns]
    if missing := [n for n in names if n not in batch.column_names]:
        raise PipelineError(
            f"{source} lacks the model's input columns {missing} (it has "
            f"{batch.column_names[:20]}): export the same columns the model was trained on"
        )
    if batch.num_rows == 0:
        raise PipelineError(f"{source} has no rows to check")
    for column in profile.columns:
        data = batch.column(column.name)
        if isinstance(column, bins.CategoricalColumn):
            counts[column.name], _ = bins.CategoricalBinner(column).counts(
                text_values(data).tolist()
            )
        else:
            try:
                values = number_values(data)
            except Exception as err:  # pyarrow's cast errors have no common public base
                raise PipelineError(
                    f"{source}: column {column.name} is numeric in training, but holds "
                    f"{data.type} values that are not numbers ({' '.join(str(err).split())[:120]})"
                ) from None
            counts[column.name] = bins.NumericBinner(column).counts(values)
    return counts


def check(profile: bins.Profile, batch: Any, source: Path, drift: Any) -> list[Score]:
    """Each column's PSI against `profile`, with its status under `drift` (the config's
    monitoring.drift: epsilon, warning, critical)."""
    by_name = {c.name: c for c in profile.columns}
    return [
        Score(name, value, _status(value, drift.warning, drift.critical))
        for name, counts in column_counts(profile, batch, source).items()
        for value in [bins.psi(counts, by_name[name].shares, drift.epsilon)]
    ]


def main(argv: list[str] | None = None) -> None:
    """CLI: print the scores; exit 1 when one is above the critical threshold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data", type=Path, help="CSV, Parquet (records), .npy or a folder of image files (images)"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profile", type=Path, help="default: the config's paths.profile")
    parser.add_argument("--card", type=Path, help="default: the config's paths.card")
    args = parser.parse_args(argv)
    with exit_on_error():
        cfg = load_config(args.params)
        path = args.profile or cfg.paths.profile
        try:
            profile = bins.read_profile(path)
        except bins.ProfileError as err:
            raise PipelineError(f"{err}: run `dvc repro` (its profile stage writes it)") from None
        drift = cfg.monitoring.drift
        batch = read_batch(args.data, args.card or cfg.paths.card)
        scores = check(profile, batch, args.data, drift)
        rows = len(batch) if isinstance(batch, np.ndarray) else batch.num_rows
        width = max(len(s.column) for s in scores)
        print(f"drift of {rows} rows of {args.data} against {path} (warning > "
              f"{drift.warning:g}, critical > {drift.critical:g})")  # fmt: skip
        for score in scores:
            print(f"  {score.column:<{width}}  {score.psi:8.4f}  {score.status}")
        if rows < drift.min_rows:
            # the sampling noise of a small batch alone can exceed the thresholds
            print(f"note: fewer rows than monitoring.drift.min_rows ({drift.min_rows}): "
                  "the scores are noisy")  # fmt: skip
        critical = [s.column for s in scores if s.status == "critical"]
        if critical:
            print(f"error: drift above {drift.critical:g} in {critical}", file=sys.stderr)
            sys.exit(1)
        print("no column above the critical threshold")


if __name__ == "__main__":
    main()
