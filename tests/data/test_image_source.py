"""Your own images (mlpipeline.data.images): a folder of class subfolders or a label file
through ingest, prepare and features, the image formats and modes `mlpipeline.imaging.decode`
converts, and each refusal in one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CONF
from PIL import Image

from mlpipeline.config import compose_config
from mlpipeline.config.schema import Source
from mlpipeline.data.images import ImageFolder, decode_all, natural_key
from mlpipeline.data.sources import source_for
from mlpipeline.data.splits import fit_normalizer
from mlpipeline.errors import PipelineError
from mlpipeline.imaging import ImageError, ImageShape, ImageTooSmall, decode
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare

SMALL = ["data.source.size=[24,32]", "data.split.min_class_samples=3"]


def picture(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """An RGB picture: noise over a colour that depends on the seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    pixels[..., seed % 3] += 180
    return pixels


def write_mixed_folder(root: Path, per_class: int = 9, corrupt: bool = True) -> Path:
    """Three classes ("2", "10", "cat"), each holding every kind of file the source reads:
    RGB and grayscale JPEG and PNG, palette, RGBA, 16-bit grayscale PNG, WebP, BMP, TIFF, and
    an EXIF-rotated JPEG; a corrupt file too when asked."""
    for c, name in enumerate(["cat", "10", "2"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            rgb = Image.fromarray(picture(10 * c + i))
            kind = i % 9
            if kind == 0:
                rgb.save(folder / f"{i}.jpg", quality=90)
            elif kind == 1:
                rgb.convert("L").save(folder / f"{i}.png")
            elif kind == 2:
                rgb.convert("P").save(folder / f"{i}.png")
            elif kind == 3:
                rgb.convert("RGBA").save(folder / f"{i}.png")
            elif kind == 4:
                wide = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
                Image.fromarray(wide).save(folder / f"{i}.png")
            elif kind == 5:
                rgb.save(folder / f"{i}.webp", lossless=True)
            elif kind == 6:
                rgb.save(folder / f"{i}.bmp")
            elif kind == 7:
                rgb.save(folder / f"{i}.tiff")
            else:
                exif = Image.Exif()
                exif[0x0112] = 6  # orientation: shown rotated 90 degrees clockwise
                rgb.transpose(Image.Transpose.ROTATE_90).save(
                    folder / f"{i}.jpg", quality=90, exif=exif
                )
            (folder / ".DS_Store").write_bytes(b"\0")  # hidden files are not data
    if corrupt:
        (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def images_cfg(make_cfg, path: Path, *overrides: str):
    return make_cfg("data=images", f"data.source.path={path}", *SMALL, *overrides)


def test_a_mixed_folder_runs_ingest_prepare_and_features(make_cfg, tmp_path: Path) -> None:
    root = write_mixed_folder(tmp_path / "raw" / "pets")
    cfg = images_cfg(make_cfg, root, "data.source.on_bad_file=skip")
    data = ingest(cfg)
    assert data.rows == 27 and data.skipped == [("cat/broken.jpg", data.skipped[0][1])]
    meta = json.loads((cfg.paths.ingested / "meta.json").read_text())
    assert meta["classes"] == ["2", "10", "cat"]  # natural order
    assert meta["input_shape"] == [3, 24, 32] and meta["input_dtype"] == "uint8"
    assert meta["image"] == {"channels": 3, "height": 24, "width": 32, "resize": "crop"}
    assert meta["files"][0] == "2/0.jpg" and meta["files"][-1] == "cat/8.jpg"
    assert meta["skipped"][0]["file"] == "cat/broken.jpg" and meta["rows"] == 27
    x = np.load(cfg.paths.ingested / "x.npy", mmap_mode="r")
    assert x.shape == (27, 3, 24, 32) and x.dtype == np.uint8
    # each row is what the service's decode gives for its file
    for row, name in enumerate(meta["files"]):
        assert np.array_equal(x[row], decode(root / name, ImageShape(3, 24, 32)))

    result = prepare(cfg)
    assert result.meta["sizes"] == {"train": 18, "val": 4, "test": 5}
    train = np.load(cfg.paths.prepared / "train" / "x.npy")
    assert train.dtype == np.uint8
    mean, std = fit_normalizer(train.astype(np.float32))
    assert np.allclose(result.meta["normalization"]["mean"], mean)
    assert np.allclose(result.meta["normalization"]["std"], std)
    assert sorted(f for part in result.meta["files"].values() for f in part) == sorted(
        meta["files"]
    )
    y_train = np.load(cfg.paths.prepared / "train" / "y.npy")
    assert np.bincount(y_train).tolist() == [6, 6, 6]  # stratified by class
    features(cfg)
    for split in ("train", "val", "test"):
        assert np.array_equal(
            np.load(cfg.paths.features / split / "x.npy"),
            np.load(cfg.paths.prepared / split / "x.npy"),
        )


def test_every_mode_becomes_the_configured_channels() -> None:
    rgb = picture(1, 20, 30)
    shape = ImageShape(3, 20, 30)
    gray = ImageShape(1, 20, 30)

    def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
        out = io.BytesIO()
        image.save(out, fmt)
        return out.getvalue()

    plain = Image.fromarray(rgb)
    assert np.array_equal(decode(encode(plain), shape), rgb.transpose(2, 0, 1))
    assert np.array_equal(decode(encode(plain.convert("RGBA")), shape), rgb.transpose(2, 0, 1))
    luminance = np.asarray(plain.convert("L"))
    assert np.array_equal(decode(encode(plain), gray)[0], luminance)
    assert decode(encode(plain.convert("L")), shape).shape == (3, 20, 30)
    palette = plain.convert("P")
    assert np.array_equal(
        decode(encode(palette), shape), np.asarray(palette.convert("RGB")).transpose(2, 0, 1)
    )
    wide = Image.fromarray(luminance.astype(np.uint16) * 257)
    assert np.array_equal(decode(encode(wide), gray)[0], luminance)  # 16-bit scaled to 8


def test_exif_orientation_is_applied() -> None:
    upright = picture(2, 40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left: shown turned back clockwise
    stored = io.BytesIO()
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(stored, "PNG", exif=exif)
    shape = ImageShape(3, 40, 60, "stretch")
    assert np.array_equal(decode(stored.getvalue(), shape), upright.transpose(2, 0, 1))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello", "not an image file"),
        (b"\x89PNG\r\n\x1a\n\0\0", "cannot decode|not an image"),
    ],
    ids=["empty", "text", "truncated-png"],
)
def test_unusable_bytes_raise_one_line(content: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason) as err:
        decode(content, ImageShape(3, 8, 8))
    assert "\n" not in str(err.value)


def test_an_image_smaller_than_the_size_is_refused_where_enlarging_is() -> None:
    small = io.BytesIO()
    Image.fromarray(picture(0, 10, 12)).save(small, "PNG")
    assert decode(small.getvalue(), ImageShape(3, 16, 16)).shape == (3, 16, 16)
    with pytest.raises(
        ImageTooSmall, match=r"12x10 pixels \(width x height\) is smaller than the configured 16x16"
    ):
        decode(small.getvalue(), ImageShape(3, 16, 16, upscale=False))


def test_the_array_does_not_depend_on_the_number_of_cores(tmp_path: Path) -> None:
    root = write_mixed_folder(tmp_path / "pets", per_class=30, corrupt=False)
    files = sorted(root.rglob("*.*"))
    files = [f for f in files if not f.name.startswith(".")]
    shape = ImageShape(3, 24, 32)
    assert decode_all(files, shape, tmp_path / "one.npy", workers=1) == {}
    assert decode_all(files, shape, tmp_path / "two.npy", workers=2) == {}
    one, two = (tmp_path / "one.npy").read_bytes(), (tmp_path / "two.npy").read_bytes()
    assert one == two
    np.save(tmp_path / "plain.npy", np.stack([decode(f, shape) for f in files]))
    assert (tmp_path / "plain.npy").read_bytes() == one


def test_digits_as_png_files_per_class(make_cfg, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * 15.9375).round().astype(np.uint8)  # 0..16 as 0..255
    root = tmp_path / "raw" / "digits-png"
    for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    cfg = make_cfg(
        "data=images", f"data.source.path={root}", "data.source.channels=1",
        "data.source.size=[8,8]",
    )  # fmt: skip
    assert cfg.project == "digits-png"
    data = ingest(cfg)
    assert data.rows == 1797 and data.images.classes == [str(c) for c in range(10)]
    x = np.load(cfg.paths.ingested / "x.npy")
    meta = json.loads((cfg.paths.ingested / "meta.json").read_text())
    index = [int(Path(f).stem) for f in meta["files"]]
    assert np.array_equal(x[:, 0], pixels[index])  # PNG is lossless, no resizing at 8x8
    assert np.array_equal(np.load(cfg.paths.ingested / "y.npy"), digits.target[index])
    result = prepare(cfg)
    assert sum(result.meta["sizes"].values()) == 1797
    assert np.array(result.meta["normalization"]["mean"]).shape == (1, 1, 1)


def test_a_label_file_of_paths_feeds_classes_or_a_regression(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "raw" / "photos"
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(30):
        Image.fromarray(picture(i)).save(root / "img" / f"{i}.png")
        rows.append({"file": f"img/{i}.png", "kind": "ab"[i % 2], "age": float(i)})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    pd.DataFrame(rows).to_parquet(root / "labels.parquet")
    common = ("data.source.path_column=file",)
    cfg = images_cfg(make_cfg, root / "labels.csv", *common, "data.source.label_column=kind")
    assert ingest(cfg).rows == 30
    result = prepare(cfg)
    assert result.meta["classes"] == ["a", "b"]
    cfg = images_cfg(
        make_cfg, root / "labels.parquet", *common, "data.source.label_column=age",
        "task=regression",
    )  # fmt: skip
    ingest(cfg)
    result = prepare(cfg)
    assert result.meta["classes"] is None and "target" in result.meta
    assert np.load(cfg.paths.prepared / "train" / "y.npy").dtype == np.float32


def refusal(make_cfg, tmp_path: Path, setup, *overrides: str) -> str:
    """Ingest's (then prepare's) one-line refusal for the folder `setup` makes."""
    path = setup(tmp_path / "raw")
    cfg = images_cfg(make_cfg, path, *overrides)
    with pytest.raises(PipelineError) as err:
        ingest(cfg)
        prepare(cfg)
    assert "\n" not in str(err.value)
    assert not cfg.paths.prepared.exists()
    return str(err.value)


def one_class(raw: Path) -> Path:
    write_mixed_folder(raw / "x", corrupt=False)
    for name in ("10", "2"):
        for f in (raw / "x" / name).iterdir():
            f.unlink()
        (raw / "x" / name).rmdir()
    return raw / "x"


def empty_class(raw: Path) -> Path:
    write_mixed_folder(raw / "x", corrupt=False)
    (raw / "x" / "dog").mkdir()
    return raw / "x"


def many_bad(raw: Path) -> Path:
    write_mixed_folder(raw / "x", corrupt=True)
    for i in range(5):
        (raw / "x" / "2" / f"notes{i}.txt").write_text("hello")
    return raw / "x"


def label_file(raw: Path, rows: list[str], header: str = "path,label") -> Path:
    """A CSV label file in raw/x beside 12 PNG images, img/0.png .. img/11.png."""
    (raw / "x" / "img").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(picture(i)).save(raw / "x" / "img" / f"{i}.png")
    (raw / "x" / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return raw / "x" / "labels.csv"


GOOD_ROWS = [f"img/{i}.png,{'ab'[i % 2]}" for i in range(12)]


def loose_files(raw: Path) -> Path:
    (raw / "x").mkdir()
    Image.fromarray(picture(0)).save(raw / "x" / "a.png")
    return raw / "x"


@pytest.mark.parametrize(
    ("setup", "overrides", "message"),
    [
        (one_class, (), r"holds one class folder \(cat\): a classifier needs at least 2"),
        (empty_class, (), r"class folder .*/x/dog holds no files: add its images"),
        (
            many_bad,
            (),
            r"^6 files in .*/x are not usable images: 2/notes0\.txt \(not an image file Pillow "
            r"can read\); .*; and 3 more: .*data\.source\.on_bad_file=skip",
        ),
        (
            lambda raw: write_mixed_folder(raw / "x", corrupt=False),
            ("data.source.size=[64,80]",),
            r"^27 images in .*/x smaller than data\.source\.size \[64, 80\] \(height, width\): "
            r"2/0\.jpg \(too small: 64x48 pixels \(width x height\) is smaller than the "
            r"configured 80x64\); .*; and 24 more: lower data\.source\.size",
        ),
        (lambda raw: raw.parent / "elsewhere", (), r"is outside .*raw/: move the images there"),
        (lambda raw: raw / "nothing", (), r"nothing not found: put your images there"),
        (loose_files, (), r"has no class subfolders \(1 files directly in it\)"),
        (
            lambda raw: label_file(raw, GOOD_ROWS, "file,label"),
            (),
            r"column 'path' not in .*labels\.csv; .*set data\.source\.path_column to one of: "
            r"file, label",
        ),
        (lambda raw: label_file(raw, []), (), r"labels\.csv has no rows"),
        (
            lambda raw: label_file(raw, [*GOOD_ROWS, "img/99.png,a"]),
            (),
            r"^1 file in .*labels\.csv is not a usable image: img/99\.png \(file not found\)",
        ),
        (
            lambda raw: label_file(raw, [*GOOD_ROWS, "../../secret.png,a"]),
            (),
            r"image paths of .*labels\.csv lead outside .*raw/ \(1 row, e\.g\. \.\./\.\./secret",
        ),
        (
            lambda raw: write_mixed_folder(raw / "x", corrupt=False),
            ("task=regression",),
            r"task regression needs a number per image, and a folder's subfolders are classes",
        ),
    ],
    ids=[
        "one-class", "empty-class", "bad-files", "too-small", "outside-raw", "missing",
        "no-subfolders", "file-no-path-column", "file-no-rows", "file-missing-image",
        "file-path-outside", "folder-regression",
    ],
)  # fmt: skip
def test_refusals_are_one_line(make_cfg, tmp_path: Path, setup, overrides, message) -> None:
    assert __import__("re").search(message, refusal(make_cfg, tmp_path, setup, *overrides))


def test_the_card_input_and_signature_are_uint8(make_cfg, tmp_path: Path) -> None:
    root = write_mixed_folder(tmp_path / "raw" / "pets", corrupt=False)
    cfg = images_cfg(make_cfg, root)
    ingest(cfg)
    result = prepare(cfg)
    source = source_for(cfg)
    assert isinstance(source, ImageFolder)
    spec = source.model_input(result.meta)
    assert spec["kind"] == "image" and spec["dtype"] == "uint8"
    assert spec["shape"] == [None, 3, 24, 32] and ".png" in spec["image"]["formats"]
    assert "RGB order" in spec["note"]
    card = {"input": spec}
    feeds = list(source.test_feeds(cfg, card))
    assert sum(len(f["image"]) for f in feeds) == 5 and feeds[0]["image"].dtype == np.uint8
    example, schema = source.signature(cfg, card)
    assert example.dtype == np.uint8
    assert schema.inputs[0].type == np.dtype(np.uint8)
    assert source.preprocessing(result.meta)["normalization"] == result.meta["normalization"]
    from mlpipeline.serving import profile

    columns = source.profile_columns(profile, cfg, result.meta, np.arange(5), feeds[0]["image"])
    assert source.profile_summary(columns) == "6 image statistics"


def test_natural_order() -> None:
    assert sorted(["10", "2", "b", "A1", "a10", "a9"], key=natural_key) == [
        "2", "10", "A1", "a9", "a10", "b",
    ]  # fmt: skip


def test_project_null_is_named_after_the_folder(tmp_path: Path) -> None:
    _, cfg = compose_config(CONF, ["data=images", "data.source.path=data/raw/My Pets"])
    assert cfg.project == "my-pets" and cfg.tracking.registered_model == "my-pets"
    # `kind: images` alone names the class, as `kind: csv` does
    section = Source.model_validate({"kind": "images", "path": "data/raw/x"})
    assert section.target == "mlpipeline.data.images.ImageFolder"
