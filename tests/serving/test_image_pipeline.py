"""A folder of image files through the real `dvc repro` (data=images), then served: every file
of the test split, sent over HTTP as the smoke check sends it, answered within 1e-5 of the
export stage's reference outputs, which the pipeline computed on its own decoding of the same
files."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import commit_all, image_file, run, serving, set_in_conf

from mlpipeline.ops import smoke as checks

pytestmark = pytest.mark.slow

FOLDER = "data/raw/shapes"
CLASSES = ("circle", "square", "triangle")
SIZE = 16


def write_folder(root: Path, per_class: int = 12) -> None:
    """One subfolder per class: RGB and grayscale, PNG and JPEG, of several sizes (all larger
    than the configured size), and one corrupt file that `on_bad_file: skip` leaves out."""
    kinds = [
        ("RGB", "PNG", "png"),
        ("L", "PNG", "png"),
        ("RGB", "JPEG", "jpg"),
        ("L", "JPEG", "jpg"),
    ]
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            mode, fmt, suffix = kinds[i % len(kinds)]
            size = (SIZE + 4 + 3 * i, SIZE + 2 + 2 * (i % 4))
            (folder / f"{name}{i:02d}.{suffix}").write_bytes(
                image_file(100 * c + i, size, mode, fmt)
            )
    (root / CLASSES[0] / "broken.png").write_bytes(image_file(999)[:40])


def use_images(repo: Path) -> None:
    """conf/ as docs/your-data.md tells a user: the images data option, the folder, a small
    size, bad files skipped; two epochs."""
    config = repo / "conf/config.yaml"
    text = config.read_text().replace("  - data: digits\n", "  - data: images\n")
    config.write_text(
        text
        + "\ndata:\n  source:\n"
        + f"    path: {FOLDER}\n    size: [{SIZE}, {SIZE}]\n    on_bad_file: skip\n"
    )
    set_in_conf(repo, "trainer/default.yaml", "max_epochs", 2)


def test_every_test_file_sent_over_http_is_answered_as_the_export_stage_computed(
    repo_copy: Path,
) -> None:
    write_folder(repo_copy / FOLDER)
    run(["dvc", "add", FOLDER], repo_copy)
    use_images(repo_copy)
    commit_all(repo_copy, "images")
    run(["dvc", "repro"], repo_copy)

    card = json.loads((repo_copy / "models/model_card.json").read_text())
    assert card["input"]["kind"] == "image" and card["input"]["dtype"] == "uint8"
    assert card["input"]["image"]["height"] == SIZE and card["classes"] == list(CLASSES)
    # the smoke check finds the folder as `make smoke` does, from params.yaml
    assert checks.image_root(repo_copy / "params.yaml") == Path(FOLDER)
    files, reference = checks.load_check_inputs(
        repo_copy / "data/prepared/test", repo_copy / "models/reference.npy", repo_copy / FOLDER
    )
    assert len(files) == len(reference) > 0
    assert all(p.is_file() and p.name != "broken.png" for p in files)
    with serving(repo_copy) as url:
        outputs, predicted = checks.predict_all(url, files, 4)
        assert checks.compare(outputs, predicted, reference, list(CLASSES)) <= 1e-5
        # the broken file the pipeline skipped: refused by name, and the service stays up
        broken = repo_copy / FOLDER / CLASSES[0] / "broken.png"
        answer = httpx.post(
            f"{url}/predict", files=[("file", (broken.name, broken.read_bytes()))], timeout=30
        )
        assert answer.status_code == 422 and "broken.png" in answer.json()["error"]
        one = httpx.post(
            f"{url}/predict",
            content=files[0].read_bytes(),
            headers={"content-type": "image/png" if files[0].suffix == ".png" else "image/jpeg"},
            timeout=30,
        )
        assert one.status_code == 200, one.text
        probs = [one.json()["probabilities"][0][c] for c in CLASSES]
        assert np.abs(np.asarray(probs) - reference[0]).max() <= 1e-5
