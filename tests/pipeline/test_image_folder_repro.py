"""A folder of images through the real `dvc repro` in a temporary copy of this repository, up to
the features: tracked with `dvc add`, an added or changed image reruns ingest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import commit_all, run, stages_run
from PIL import Image

pytestmark = pytest.mark.slow


def write_folder(root: Path) -> None:
    """Two classes of RGB and grayscale, JPEG and PNG photos, and a corrupt file."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(["dog", "cat"]):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 90, (40, 50, 3), dtype=np.uint8)
            pixels[..., c] += 150
            image = Image.fromarray(pixels)
            if i % 2:
                image.convert("L").save(root / name / f"{i}.png")
            else:
                image.save(root / name / f"{i}.jpg", quality=90)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def use_images(repo: Path, folder: str) -> None:
    """conf/ names the folder, as docs/your-data.md tells a user to."""
    config = repo / "conf/config.yaml"
    config.write_text(config.read_text().replace("  - data: digits\n", "  - data: images\n"))
    images = repo / "conf/data/images.yaml"
    text = images.read_text().replace("data/raw/images", f"data/raw/{folder}")
    text = text.replace("on_bad_file: refuse", "on_bad_file: skip")
    images.write_text(text.replace("size: [64, 64]", "size: [32, 32]"))


def test_an_added_or_changed_image_reruns_ingest(repo_copy: Path) -> None:
    write_folder(repo_copy / "data/raw/pets")
    run(["dvc", "add", "data/raw/pets"], repo_copy)
    use_images(repo_copy, "pets")
    commit_all(repo_copy, "pets")
    first = run(["dvc", "repro", "features"], repo_copy)
    assert "ingested 16 images as 3x32x32 uint8 (crop), 2 classes" in first.stdout
    assert "skipped 1 file: cat/broken.png" in first.stdout
    meta = json.loads((repo_copy / "data/prepared/meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["input_dtype"] == "uint8"
    assert stages_run(run(["dvc", "repro", "features"], repo_copy).stdout) == ["compose"]

    # a new image: the folder's hash changes, before and after `dvc add`
    Image.new("RGB", (40, 40), (200, 10, 10)).save(repo_copy / "data/raw/pets/dog/new.png")
    status = run(["dvc", "status", "data/raw/pets.dvc"], repo_copy).stdout
    assert "modified" in status, status
    again = run(["dvc", "repro", "features"], repo_copy)
    assert "ingest" in stages_run(again.stdout) and "ingested 17 images" in again.stdout
    run(["dvc", "add", "data/raw/pets"], repo_copy)
    assert stages_run(run(["dvc", "repro", "features"], repo_copy).stdout) == ["compose"]

    # a changed image: ingest runs again
    Image.new("RGB", (40, 40), (10, 200, 10)).save(repo_copy / "data/raw/pets/dog/new.png")
    changed = run(["dvc", "repro", "features"], repo_copy)
    assert "ingest" in stages_run(changed.stdout)
