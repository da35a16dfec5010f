"""Drift of an image model whose input is uint8 pixels (0..255, decoded from image files): the
profile bins their statistics in pixel units, the service counts uint8 batches as the profile
binned them, and `make drift DATA=<folder>` decodes a folder of image files as the card says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, demo_params, one_line_error
from PIL import Image
from prometheus_client import CollectorRegistry

from mlpipeline.serving import profile as bins
from mlpipeline.serving.drift import DriftCounters

SHAPE = (3, 16, 16)
CARD_IMAGE = {"channels": 3, "height": 16, "width": 16, "resize": "crop"}


def pixels(count: int, brightness: int, seed: int) -> np.ndarray:
    """uint8 images around `brightness`, noisy."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(brightness, 30, (count, *SHAPE)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An image model's profile of 600 uint8 training images, and its card."""
    directory = tmp_path_factory.mktemp("reference")
    profile = bins.Profile(
        input="image",
        rows=600,
        columns=bins.image_columns(pixels(600, 100, 0), 10),
        prediction=bins.ClassPrediction(classes=["a", "b"], shares=[0.5, 0.5]),
    )
    (directory / "profile.json").write_text(profile.model_dump_json(exclude_none=True))
    card = {"input": {"kind": "image", "name": "image", "dtype": "uint8",
                      "shape": [None, *SHAPE], "image": CARD_IMAGE}}  # fmt: skip
    (directory / "card.json").write_text(json.dumps(card))
    return directory / "profile.json", directory / "card.json"


def test_uint8_statistics_are_in_pixel_units_and_counted_as_their_float_values() -> None:
    train = pixels(300, 100, 0)
    columns = bins.image_columns(train, 10)
    assert [c.name for c in columns][:2] == ["channel_0_mean", "channel_1_mean"]
    means = next(c for c in columns if c.name == "channel_0_mean")
    assert 80 < means.edges[0] < means.edges[-1] < 120, "pixel units, not 0..1"
    assert bins.image_columns(train.astype(np.float32), 10) == columns
    profile = bins.Profile(
        input="image",
        rows=300,
        columns=columns,
        prediction=bins.ClassPrediction(classes=["a", "b"], shares=[0.5, 0.5]),
    )
    counted = {}
    for batch in (pixels(50, 160, 1), pixels(50, 160, 1).astype(np.float32)):
        registry = CollectorRegistry()
        counters = DriftCounters(profile, registry)
        counters.count({"image": batch}, np.tile([[0.9, 0.1]], (50, 1)))
        counters.flush()
        counted[batch.dtype.name] = {
            (s.labels["column"], s.labels["bin"]): s.value
            for s in registry.collect()
            for s in s.samples
            if s.name == "model_input_bin_total"
        }
    assert counted["uint8"] == counted["float32"]
    # brighter images than in training: their means all fall in the top bin
    assert counted["uint8"][("channel_0_mean", str(len(means.edges)))] == 50


def check(data: Path, reference: tuple[Path, Path]) -> subprocess.CompletedProcess:
    profile, card = reference
    return subprocess.run(
        [sys.executable, "-m", "mlpipeline.ops.drift", str(data), "--profile", str(profile),
         "--card", str(card), "--params", str(demo_params())],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def write_images(folder: Path, images: np.ndarray) -> None:
    """PNG files in two class subfolders, and a file of another kind."""
    for i, image in enumerate(images):
        sub = folder / ("cat" if i % 2 else "dog")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(sub / f"{i}.png")
    (folder / "notes.txt").write_text("not an image: ignored")


def test_a_folder_of_image_files_like_training_passes_and_a_brighter_one_fails(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    write_images(tmp_path / "same", pixels(200, 100, 2))
    proc = check(tmp_path / "same", reference)
    assert proc.returncode == 0, proc.stderr
    assert "drift of 200 rows" in proc.stdout and "channel_2_std" in proc.stdout
    write_images(tmp_path / "bright", pixels(200, 170, 3))
    proc = check(tmp_path / "bright", reference)
    one_line_error(proc, "drift above 0.25 in [", "channel_0_mean")


def test_a_corrupt_file_or_a_folder_for_an_array_model_is_one_line(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    write_images(tmp_path / "new", pixels(4, 100, 4))
    (tmp_path / "new" / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    one_line_error(
        check(tmp_path / "new", reference),
        "1 of 5 files under",
        "cat/broken.jpg (not an image file Pillow can read)",
        "remove or replace them",
    )
    tensor_card = tmp_path / "tensor_card.json"
    tensor_card.write_text(json.dumps({"input": {"kind": "tensor", "shape": [None, 1, 8, 8]}}))
    one_line_error(
        check(tmp_path / "new", (reference[0], tensor_card)),
        "the model takes arrays, not image files: give a .npy",
    )
