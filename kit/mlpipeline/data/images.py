"""Your own images as a data kind: a folder with one subfolder per class, or a CSV/Parquet file
of image paths and a label column. Ingest decodes every file once, on all cores, with the
function the model service uses (`mlpipeline.imaging.decode`), into one uint8 array on disk
(N, C, H, W), written as the images are decoded; no later stage decodes again."""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mlpipeline.artifacts import (
    array_chunks,
    array_writer,
    atomic_path,
    parquet_writer,
    read_json,
    save_arrays,
    write_json,
)
from mlpipeline.config import Config
from mlpipeline.config.schema import suggest
from mlpipeline.data.sources import ImageArrays, read_table
from mlpipeline.data.splits import prepare_images
from mlpipeline.errors import PipelineError
from mlpipeline.imaging import IMAGE_SUFFIXES, ImageError, ImageShape, ImageTooSmall, decode

# files decoded by one worker at a time: large enough to hide the pool's overhead, small
# enough to keep every core busy to the end
FILES_PER_JOB = 32
# problem files a refusal names before giving the count
NAMED = 3
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".gz", ".parquet", ".pq")


@dataclass(frozen=True)
class ImageList:
    """What `ImageFolder.load` finds, before anything is decoded: each image's file and its
    label (a class index into `classes`, or, from a label file, the label as read)."""

    root: Path  # the folder the files' names are relative to
    files: list[Path]
    y: np.ndarray | None  # int64 class indices (a folder), else None
    labels: Any  # pyarrow.Array of the label column as read (a label file), else None
    classes: list[str] | None  # the folder's subfolders in natural order, else None
    origin: str  # "folder" or "file", for ingest's line


@dataclass(frozen=True)
class Ingested:
    """What ingest wrote: the rows kept, and the files skipped with their reasons."""

    images: ImageList
    rows: int
    skipped: list[tuple[str, str]]


def natural_key(name: str) -> list[Any]:
    """Sort key that puts "2" before "10": the digit runs compared as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _visible(path: Path) -> bool:
    # hidden files (.DS_Store, .gitignore) and DVC's own are not data
    return not path.name.startswith(".") and path.suffix != ".dvc"


def _count(n: int, noun: str) -> str:
    """The count and the noun, plural unless one: 1 file, 3 files."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _named(items: list[tuple[str, str]]) -> str:
    """The first few (file, reason) pairs, and how many more."""
    shown = "; ".join(f"{name} ({why})" for name, why in items[:NAMED])
    return shown + (f"; and {len(items) - NAMED} more" if len(items) > NAMED else "")


def _decode_job(job: tuple[str, int, int, int, list[str], ImageShape]) -> list[tuple[int, str]]:
    """Decode `files` into rows start.. of the .npy file at `out` (its data at byte `offset`,
    `row_bytes` per image), written in place; the rows that failed (left zero) and why."""
    out, offset, row_bytes, start, files, shape = job
    pixels = np.zeros((len(files), *shape.array_shape), dtype=np.uint8)
    failed = []
    for i, name in enumerate(files):
        try:
            pixels[i] = decode(Path(name), shape)
        except ImageTooSmall as err:
            failed.append((start + i, f"too small: {err}"))
        except ImageError as err:
            failed.append((start + i, str(err)))
    with open(out, "r+b") as handle:  # each worker writes its own rows of the one file
        handle.seek(offset + start * row_bytes)
        handle.write(pixels.data)
    return failed


def _workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_all(
    files: list[Path], shape: ImageShape, out: Path, workers: int | None = None
) -> dict[int, str]:
    """Decode `files` into a new .npy file `out` of uint8 (len(files), C, H, W), one process
    per core, each writing its rows in place: the pixels never pass between processes and
    the file's bytes do not depend on the number of cores. The rows that failed (left zero),
    and why."""
    row_bytes = int(np.prod(shape.array_shape))
    with open(out, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle,
            {"descr": "|u1", "fortran_order": False, "shape": (len(files), *shape.array_shape)},
        )
        offset = handle.tell()
        handle.truncate(offset + row_bytes * len(files))  # zeros, until the workers write
    names = [str(f) for f in files]
    jobs = [
        (str(out), offset, row_bytes, i, names[i : i + FILES_PER_JOB], shape)
        for i in range(0, len(names), FILES_PER_JOB)
    ]
    workers = min(workers or _workers(), len(jobs))
    if workers <= 1:
        results: Iterator[list[tuple[int, str]]] = map(_decode_job, jobs)
        return {row: why for failed in results for row, why in failed}
    # fork starts a worker in milliseconds, with this module loaded; elsewhere (macOS,
    # Windows) forking is unsafe or absent and the workers import it anew
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    # an executor, not a Pool: a worker that dies (out of memory) fails the run, never hangs it
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            return {row: why for failed in pool.map(_decode_job, jobs) for row, why in failed}
        except BrokenProcessPool:
            raise PipelineError(
                "a process decoding the images died (out of memory?): free memory, or lower "
                "data.source.size"
            ) from None


def _compact(path: Path, keep: np.ndarray, shape: tuple[int, ...]) -> None:
    """Rewrite the .npy file `path` with only the rows `keep` (a boolean mask), a chunk of
    rows at a time."""
    chunk = max(1, (64 << 20) // int(np.prod(shape)))
    kept = path.with_name(path.name + ".kept")
    with array_writer(kept, (int(keep.sum()), *shape), np.uint8) as write:
        for start, x in zip(range(0, len(keep), chunk), array_chunks(path, chunk), strict=True):
            write(x[keep[start : start + len(x)]])
    kept.replace(path)


class ImageFolder(ImageArrays):
    """Your own image files under `paths.raw`: a folder with one subfolder per class (the
    names are the classes, in natural order), or a CSV/Parquet file of image paths (relative
    to its folder) and a label column (a class, or a number for task=regression). JPEG, PNG,
    WebP, BMP and TIFF, converted to `channels` and resized to `size` (height, width)."""

    input_kind = "image"
    network_input = "image"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression")

    def __init__(
        self,
        path: Path,
        kind: Literal["images"] = "images",
        label_column: Annotated[str, Field(min_length=1)] = "label",
        path_column: Annotated[str, Field(min_length=1)] = "path",
        on_bad_file: Literal["refuse", "skip"] = "refuse",
        channels: Literal[1, 3] = 3,
        size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (64, 64),
        resize: Literal["crop", "stretch"] = "crop",
    ) -> None:
        self.path, self.kind = Path(path), kind
        self.label_column, self.path_column = label_column, path_column
        # skip: a file that cannot be used is left out (and named in ingest's line)
        self.on_bad_file = on_bad_file
        self.shape = ImageShape(channels, int(size[0]), int(size[1]), resize)

    def load(self, raw_dir: Path) -> ImageList:
        """The image files and their labels, found but not decoded."""
        path = self.path
        if not path.resolve().is_relative_to(raw_dir.resolve()):
            raise PipelineError(
                f"data.source.path {path} is outside {raw_dir}/: move the images there (and "
                f"`dvc add {raw_dir}/<folder>`) so DVC tracks them as a dependency of ingest"
            )
        if path.is_dir():
            return self._load_folder(path)
        if path.is_file():
            return self._load_file(path, raw_dir)
        raise PipelineError(
            f"data.source.path {path} not found: put your images there, one subfolder per "
            "class, or point data.source.path at such a folder or at a CSV/Parquet file of "
            "image paths and labels"
        )

    def _load_folder(self, root: Path) -> ImageList:
        entries = sorted((p for p in root.iterdir() if _visible(p)), key=lambda p: p.name)
        folders = sorted((p for p in entries if p.is_dir()), key=lambda p: natural_key(p.name))
        if not folders:
            loose = [p.name for p in entries if p.is_file()]
            tables = [n for n in loose if n.lower().endswith(TABLE_SUFFIXES)]
            hint = (
                f", or point data.source.path at the label file {root / tables[0]}"
                if tables
                else ""
            )
            raise PipelineError(
                f"{root} has no class subfolders"
                + (f" ({len(loose)} files directly in it)" if loose else "")
                + f": put each class's images in a subfolder named after the class{hint}"
            )
        if len(folders) == 1:
            raise PipelineError(
                f"{root} holds one class folder ({folders[0].name}): a classifier needs at "
                "least 2, one subfolder per class"
            )
        files, y = [], []
        for index, folder in enumerate(folders):
            found = sorted(
                (p for p in folder.rglob("*") if p.is_file() and _visible(p)),
                key=lambda p: natural_key(p.relative_to(folder).as_posix()),
            )
            if not found:
                raise PipelineError(
                    f"class folder {folder} holds no files: add its images "
                    f"({', '.join(IMAGE_SUFFIXES)}) or remove the folder"
                )
            files += found
            y += [index] * len(found)
        classes = [f.name for f in folders]
        return ImageList(root, files, np.array(y, dtype=np.int64), None, classes, "folder")

    def _load_file(self, path: Path, raw_dir: Path) -> ImageList:
        kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
        table = read_table(path, kind)
        for key, column in (("path_column", self.path_column), ("label_column", self.label_column)):
            if column not in table.column_names:
                raise PipelineError(
                    f"column '{column}' not in {path}; {suggest(column, table.column_names)}"
                    f"set data.source.{key} to one of: {', '.join(table.column_names)}"
                )
        if table.num_rows == 0:
            raise PipelineError(f"{path} has no rows: list one image path and label per row")
        names, labels = table.column(self.path_column), table.column(self.label_column)
        missing = names.null_count + labels.null_count
        if missing:
            raise PipelineError(
                f"{missing} rows of {path} have no '{self.path_column}' or no "
                f"'{self.label_column}': fill or drop them"
            )
        root = path.parent
        files = [root / str(name) for name in names.to_pylist()]
        outside = [
            str(n)
            for n, f in zip(names.to_pylist(), files, strict=True)
            if not f.resolve().is_relative_to(raw_dir.resolve())
        ]
        if outside:
            raise PipelineError(
                f"image paths of {path} lead outside {raw_dir}/ ({_count(len(outside), 'row')}, "
                f"e.g. {outside[0]}): move the images under it, so DVC tracks them"
            )
        return ImageList(root, files, None, labels.combine_chunks(), None, "file")

    def ingest(self, raw_dir: Path, directory: Path) -> tuple[Ingested, str]:
        """Decode every image once into `directory`: x.npy (uint8, N x C x H x W), the labels
        (y.npy class indices from a folder, labels.parquet as read from a label file) and
        meta.json; files that cannot be used are refused, or skipped with on_bad_file=skip."""
        images = self.load(raw_dir)
        shape = self.shape
        ingest_shape = ImageShape(
            shape.channels, shape.height, shape.width, shape.resize, upscale=False
        )
        with atomic_path(directory, is_dir=True) as out:
            failed = decode_all(images.files, ingest_shape, out / "x.npy")
            named = {
                row: (self._relative(images, images.files[row]), why)
                for row, why in sorted(failed.items())
            }
            if failed and self.on_bad_file == "refuse":
                raise PipelineError(self._refusal(list(named.values())))
            keep = np.ones(len(images.files), dtype=bool)
            keep[list(failed)] = False
            if failed:
                _compact(out / "x.npy", keep, shape.array_shape)
            rows = int(keep.sum())
            if rows == 0:
                raise PipelineError(f"no usable image in {self.path}: every file was skipped")
            if images.y is not None:
                save_arrays(out, y=images.y[keep])
            else:
                import pyarrow as pa  # a second to import; only a label file needs it

                column = images.labels.filter(pa.array(keep))
                labels = pa.table({self.label_column: column})
                with parquet_writer(out / "labels.parquet", labels.schema) as writer:
                    writer.write_table(labels)
            write_json(
                out / "meta.json",
                {
                    "source": self.kind,
                    "origin": images.origin,
                    "classes": images.classes,
                    "label_column": None if images.y is not None else self.label_column,
                    "feature_names": None,
                    "input_shape": list(shape.array_shape),
                    "input_dtype": "uint8",
                    "image": self._image(),
                    "files": [
                        self._relative(images, f)
                        for f, k in zip(images.files, keep, strict=True)
                        if k
                    ],
                    "skipped": [{"file": f, "reason": why} for f, why in named.values()],
                    "rows": rows,
                },
            )
        result = Ingested(images, rows, list(named.values()))
        return result, self.describe(result)

    def _relative(self, images: ImageList, file: Path) -> str:
        return (
            file.relative_to(images.root).as_posix()
            if file.is_relative_to(images.root)
            else str(file)
        )

    def _refusal(self, problems: list[tuple[str, str]]) -> str:
        small = [(f, why) for f, why in problems if why.startswith("too small")]
        if len(small) == len(problems):
            return (
                f"{_count(len(small), 'image')} in {self.path} smaller than data.source.size "
                f"[{self.shape.height}, {self.shape.width}] (height, width): {_named(small)}: "
                "lower data.source.size, or remove them (data.source.on_bad_file=skip leaves "
                "them out)"
            )
        return (
            f"{_count(len(problems), 'file')} in {self.path} "
            f"{'is not a usable image' if len(problems) == 1 else 'are not usable images'}: "
            f"{_named(problems)}: replace or remove {'it' if len(problems) == 1 else 'them'}, "
            "or set data.source.on_bad_file=skip to leave them out"
        )

    def _image(self) -> dict[str, Any]:
        shape = self.shape
        return {
            "channels": shape.channels,
            "height": shape.height,
            "width": shape.width,
            "resize": shape.resize,
        }

    def describe(self, data: Ingested) -> str:
        classes = data.images.classes
        what = f"{len(classes)} classes" if classes else f"label '{self.label_column}'"
        shape = self.shape
        line = (
            f"{data.rows} images as {shape.channels}x{shape.height}x{shape.width} uint8 "
            f"({shape.resize}), {what} from {self.path}"
        )
        if data.skipped:
            line += f"; skipped {_count(len(data.skipped), 'file')}: {_named(data.skipped)}"
        return line

    def prepare(self, cfg: Config, task: Any) -> tuple[Any, str]:
        """The labels as the task reads them, checked and split (stratified by class); the
        images copied into the splits a chunk at a time, the normalisation fitted on train."""
        ingested = cfg.paths.ingested
        if not (ingested / "meta.json").is_file():
            raise PipelineError(f"{ingested}/meta.json not found: run the ingest stage first")
        meta = read_json(ingested / "meta.json")
        if meta["classes"] is not None:
            if not task.has_classes:
                raise PipelineError(
                    f"task {task.name} needs a number per image, and a folder's subfolders "
                    "are classes: point data.source.path at a CSV/Parquet file of image paths "
                    "and a numeric label column"
                )
            y = np.load(ingested / "y.npy")
        else:
            import pyarrow.parquet as pq  # a second to import; only a label file needs it

            column = pq.read_table(ingested / "labels.parquet").column(meta["label_column"])
            y, classes = task.encode_labels(column, meta["label_column"])
            meta = {**meta, "classes": classes}
        result = prepare_images(
            ingested / "x.npy", y, meta, cfg.data.split, cfg.seed, task, cfg.paths.prepared
        )
        classes = result.meta["classes"]
        return result, f"{len(classes)} classes" if classes else "a target"

    def model_input(self, meta: dict[str, Any]) -> dict[str, Any]:
        """What the served model takes (image files) and the bare ONNX model (uint8 NCHW)."""
        image = meta["image"]
        order = "RGB" if image["channels"] == 3 else "grayscale"
        how = (
            "the shorter side scaled to fit, then the centre cut out"
            if image["resize"] == "crop"
            else "both sides scaled"
        )
        return {
            "kind": self.input_kind,
            "name": self.network_input,
            "dtype": "uint8",
            "shape": [None, *meta["input_shape"]],
            "image": {**image, "formats": list(IMAGE_SUFFIXES)},
            "note": (
                "the service takes image files; the ONNX model takes uint8 pixels (batch, "
                f"{image['channels']}, {image['height']}, {image['width']}) in {order} order, "
                f"EXIF orientation applied, resized with a bilinear filter ({how}), and "
                "normalises them itself"
            ),
        }

    def preprocessing(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "applied_inside_model": True,
            "note": "send uint8 pixels; the model subtracts mean and divides by std itself",
            "normalization": meta["normalization"],
            "decode": "mlpipeline.imaging.decode",
        }
