"""A small sample of your data's kind, for a new project's first run: `copier copy` runs this
file when you choose a table or an image folder and nothing is at its path yet. Replace the
sample with your data (docs/your-data.md).

It imports the standard library alone, as it runs with the Python that runs Copier, which may
have none of the project's packages:

    python3 kit/mlpipeline/sample_data.py table data/raw/table.csv --label label --task regression
    python3 kit/mlpipeline/sample_data.py images data/raw/images
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

TABLE_ROWS = 300
IMAGES_PER_CLASS = 20
# conf/data/images.yaml's default size: ingest never enlarges an image
IMAGE_SIZE = 64
CLASSES = ("alpha", "beta", "gamma")
SHAPES = ("circle", "square", "stripes")


def table_rows(rows: int, label: str, task: str, seed: int = 0) -> list[dict[str, object]]:
    """`rows` records of mixed types (numbers, a category, a boolean, a few missing values) whose
    `label` follows from them: one of three classes, or a number for a regression."""
    rng = random.Random(seed)
    records: list[dict[str, object]] = []
    for _ in range(rows):
        size = rng.gauss(10.0, 3.0)
        weight = rng.gauss(50.0, 12.0)
        colour = rng.choice(("red", "green", "blue"))
        indoor = rng.random() < 0.4
        count = rng.randint(0, 20)
        score = (
            0.6 * (size - 10.0)
            + 0.1 * (weight - 50.0)
            + {"red": -1.5, "green": 0.0, "blue": 1.5}[colour]
            + (1.0 if indoor else 0.0)
            + rng.gauss(0.0, 0.5)
        )
        target: object
        if task == "regression":
            target = round(3.0 * score + 20.0, 3)
        else:
            target = CLASSES[0] if score < -0.8 else CLASSES[1] if score < 0.8 else CLASSES[2]
        records.append(
            {
                "size": round(size, 3),
                # about one value in twenty missing: the features stage imputes it
                "weight": "" if rng.random() < 0.05 else round(weight, 2),
                "colour": colour,
                "indoor": "true" if indoor else "false",
                "count": count,
                label: target,
            }
        )
    return records


def png(pixels: list[list[tuple[int, int, int]]]) -> bytes:
    """An 8-bit RGB PNG file of `pixels` (rows of (r, g, b)), unfiltered and zlib-compressed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def shape_image(shape: str, rng: random.Random, size: int = IMAGE_SIZE) -> bytes:
    """A PNG of one shape (a circle, a square or stripes) of a random colour, place and size, on
    a noisy background of another colour."""
    ink = tuple(rng.randint(120, 255) for _ in range(3))
    paper = tuple(rng.randint(0, 90) for _ in range(3))
    cx, cy = rng.uniform(size * 0.35, size * 0.65), rng.uniform(size * 0.35, size * 0.65)
    radius = rng.uniform(size * 0.2, size * 0.35)
    period = rng.randint(4, 8)

    def inside(x: int, y: int) -> bool:
        if shape == "circle":
            return math.hypot(x - cx, y - cy) <= radius
        if shape == "square":
            return abs(x - cx) <= radius and abs(y - cy) <= radius
        return (x // (period // 2)) % 2 == 0

    def noisy(colour: tuple[int, ...]) -> tuple[int, int, int]:
        r, g, b = (min(255, max(0, c + rng.randint(-20, 20))) for c in colour)
        return r, g, b

    return png([[noisy(ink if inside(x, y) else paper) for x in range(size)] for y in range(size)])


def write_table(path: Path, label: str, task: str, rows: int = TABLE_ROWS) -> None:
    """Write the sample table as CSV at `path`, whole or not at all."""
    records = table_rows(rows, label, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_images(path: Path, per_class: int = IMAGES_PER_CLASS) -> None:
    """Write the sample folder at `path`: one subfolder of PNG files per shape, whole or not at
    all."""
    rng = random.Random(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        for shape in SHAPES:
            (tmp / shape).mkdir()
            for i in range(per_class):
                (tmp / shape / f"{shape}-{i:03d}.png").write_bytes(shape_image(shape, rng))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Write a sample of `kind` at `path` unless something is there; the status code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("table", "images"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--label", default="label", help="a table's label column")
    parser.add_argument(
        "--task", choices=("classification", "regression"), default="classification"
    )
    args = parser.parse_args(argv)
    path: Path = args.path
    if path.exists():
        print(f"{path} is there: no sample written")
        return 0
    if args.kind == "table" and path.suffix != ".csv":
        print(
            f"no sample written at {path}: the sample is a CSV file; put your table there "
            f"(docs/your-data.md) before `make pipeline`"
        )
        return 0
    if args.kind == "table":
        write_table(path, args.label, args.task)
        what = f"{TABLE_ROWS} rows, label column {args.label} ({args.task})"
    else:
        write_images(path)
        what = f"{IMAGES_PER_CLASS * len(SHAPES)} PNG files in {len(SHAPES)} class folders"
    print(f"wrote a sample at {path} ({what}): replace it with your data (docs/your-data.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
