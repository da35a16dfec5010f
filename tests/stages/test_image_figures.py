"""Evaluate's figure of the test images with the largest loss: the task picks the rows and
labels them, the data kind draws them (any image array: uint8 pixels or digits' floats), a
table draws nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlpipeline.config.tasks import Classification, Regression
from mlpipeline.data.sources import Digits, TableFile
from mlpipeline.plots import LARGEST_LOSS, largest_loss_grid


def test_a_classification_picks_the_rows_whose_true_class_is_least_likely() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    y = np.array([0, 0, 1, 1])
    worst = Classification().largest_losses(probs, y, ["cat", "dog"], 3)
    assert worst == [
        (1, "cat", "dog (0.80)"),
        (2, "dog", "cat (0.60)"),
        (3, "dog", "cat (0.50)"),  # a tie of 0.5 goes to the first class, as argmax does
    ]


def test_a_regression_picks_the_largest_squared_errors() -> None:
    worst = Regression().largest_losses(torch.tensor([1.0, 5.0, 2.5]), np.array([1, 2, 3]), None, 2)
    assert worst == [(1, "2", "5"), (2, "3", "2.5")]


def grid_pixels(path: Path) -> np.ndarray:
    assert path.name == f"{LARGEST_LOSS}.png" and path.read_bytes().startswith(b"\x89PNG")
    return np.asarray(Image.open(path).convert("RGB"))


def test_uint8_colour_images_are_drawn_in_their_colours(tmp_path: Path) -> None:
    x = np.zeros((5, 3, 16, 16), np.uint8)
    x[:, 0] = 255  # pure red images
    worst = [(4, "red", "blue (0.70)"), (0, "red", "green (0.60)")]
    path = largest_loss_grid(x, worst, tmp_path)
    pixels = grid_pixels(path).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)
    assert red.sum() > 100, "the images' red shows"
    first = path.read_bytes()
    assert largest_loss_grid(x, worst, tmp_path).read_bytes() == first, "bytes follow the data"


def test_memory_mapped_uint8_grayscale_and_float_digits_are_drawn(tmp_path: Path) -> None:
    gray = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, (3, 1, 12, 12))
    gray[:] = 0
    gray[1, 0, 2:10, 2:10] = 255
    path = largest_loss_grid(gray, [(1, "square", "circle (0.90)")], tmp_path / "gray")
    assert (grid_pixels(path) > 250).all(axis=2).sum() > 40  # the white square, and the page
    digits = np.linspace(0, 16, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    assert grid_pixels(largest_loss_grid(digits, [(0, "3", "8 (0.51)")], tmp_path / "d")).size


def test_images_draw_the_grid_and_a_table_draws_nothing(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(0, 16, (4, 1, 8, 8)).astype(np.float32)
    assert Digits.figures == (LARGEST_LOSS,)
    assert Digits().draw_figures(x, [(2, "1", "7 (0.40)")], tmp_path) == [
        tmp_path / f"{LARGEST_LOSS}.png"
    ]
    table = TableFile(path=tmp_path / "t.csv", label="y")
    assert table.figures == () and table.draw_figures(x, [(0, "a", "b")], tmp_path / "t") == []
    assert not (tmp_path / "t").exists()
