"""Your own images, as docs/your-data.md walks through them: a folder of class subfolders
(RGB and grayscale, JPEG and PNG, drawn shapes, a corrupt file skipped) tracked with `dvc add`,
the real `dvc exp run -S data=images` to the end of register, the test images with the largest
loss drawn, the card's input contract, the service answering a multipart upload, the offline
drift check on a folder of files; then a timm resnet18 fine-tuned from a local weights file."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import commit_all, one_line_error, run, serving, set_in_conf
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

# the README's commands ("where to change what"), run here as written, then with settings added
IMAGES = ["dvc", "exp", "run", "-S", "data=images", "-S", "data.source.path=data/raw/myimages"]
TIMM = ["dvc", "exp", "run", "-S", "data=images", "-S", "data.source.path=data/raw/myimages", "-S", "model=timm", "-S", "model.name=resnet18", "-S", "model.pretrained=weights/resnet18.safetensors"]  # fmt: skip  # noqa: E501
SETTINGS = ["-S", "data.source.on_bad_file=skip", "-S", "data.source.size=[32,32]"]
CLASSES = ["circle", "square", "triangle"]
PER_CLASS = 20


def draw(shape: str, index: int) -> Image.Image:
    """A shape in a colour on a background, at a place and size that vary with `index`."""
    rng = np.random.default_rng(index)
    image = Image.new("RGB", (48, 40), tuple(int(v) for v in rng.integers(0, 90, 3)))
    pen = ImageDraw.Draw(image)
    x, y, size = int(rng.integers(4, 14)), int(rng.integers(2, 10)), int(rng.integers(18, 26))
    colour = tuple(int(v) for v in rng.integers(140, 256, 3))
    box = (x, y, x + size, y + size)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
    return image


def write_folder(folder: Path) -> list[Path]:
    """Per class, PNG and JPEG files, every third one grayscale; a corrupt JPEG; the files."""
    written = []
    for label in CLASSES:
        (folder / label).mkdir(parents=True)
        for i in range(PER_CLASS):
            image = draw(label, 1000 * CLASSES.index(label) + i)
            if i % 3 == 0:
                image = image.convert("L")
            path = folder / label / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
            image.save(path)
            written.append(path)
    (folder / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    return written


def test_an_image_folder_trains_registers_serves_and_fine_tunes(repo_copy: Path) -> None:
    repo = repo_copy
    set_in_conf(repo, "trainer/default.yaml", "max_epochs", 2)
    commit_all(repo, "two epochs")
    files = write_folder(repo / "data/raw/myimages")
    run(["dvc", "add", "data/raw/myimages"], repo)
    run(["git", "add", "data/raw/myimages.dvc", "data/raw/.gitignore"], repo)
    commit_all(repo, "Add my images")

    proc = run([*IMAGES, *SETTINGS], repo)
    assert "broken.jpg" in proc.stdout, "ingest's line names the skipped file"
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["test_samples"] > 0
    per_class = (repo / "reports/eval/per_class.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in per_class[1:]] == CLASSES
    figures = repo / "reports/figures"
    for name in ("confusion", "f1_per_class", "largest_loss"):
        assert (figures / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
    card = json.loads((repo / "models/model_card.json").read_text())
    contract = card["input"]
    assert contract["kind"] == "image" and contract["dtype"] == "uint8"
    assert contract["shape"] == [None, 3, 32, 32]
    assert contract["image"]["resize"] == "crop" and ".jpg" in contract["image"]["formats"]
    assert "uint8" in contract["note"] and "RGB" in contract["note"]
    assert card["classes"] == CLASSES
    profile = json.loads((repo / "models/profile.json").read_text())
    assert profile["input"] == "image"
    mean_edges = next(c for c in profile["columns"] if c["name"] == "channel_0_mean")["edges"]
    assert max(mean_edges) > 1.0, "pixel units (0..255), not 0..1"
    first = json.loads((repo / "models/registration.json").read_text())

    with serving(repo) as url:
        sent = [files[1], files[PER_CLASS + 2]]  # a circle's PNG, a square's JPEG
        answer = httpx.post(
            f"{url}/predict",
            files=[("file", (p.name, p.read_bytes())) for p in sent],
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["predictions"]) == 2 and set(body["predictions"]) <= set(CLASSES)
        assert [sorted(p) for p in body["probabilities"]] == [CLASSES, CLASSES]

    # the offline drift check decodes a folder of files as the card says (one class alone
    # differs from the training images: its exit status may say so), and names a corrupt file
    check = ["python", "-m", "mlpipeline.ops.drift"]
    drift = run([*check, "data/raw/myimages/circle"], repo, check=False)
    assert drift.returncode in (0, 1) and "Traceback" not in drift.stderr, drift.stderr
    assert f"drift of {PER_CLASS} rows" in drift.stdout and "channel_2_std" in drift.stdout
    one_line_error(run([*check, "data/raw/myimages"], repo, check=False), "square/broken.jpg")

    # fine-tuning: weights saved from a locally created resnet18 (nothing is downloaded here)
    import timm
    from safetensors.torch import save_file

    weights = repo / "weights/resnet18.safetensors"
    weights.parent.mkdir(exist_ok=True)
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    run(["dvc", "add", "weights/resnet18.safetensors"], repo)
    run(["git", "add", "weights/resnet18.safetensors.dvc", "weights/.gitignore"], repo)
    commit_all(repo, "Add resnet18's weights")
    run([*TIMM, *SETTINGS, "-S", "callbacks.finetune.freeze_epochs=1"], repo)
    tuned = json.loads((repo / "models/registration.json").read_text())
    assert tuned["onnx_md5"] != first["onnx_md5"]
    assert tuned["registered_model"] == first["registered_model"] == "myimages"
    assert (figures / "largest_loss.png").is_file()
