"""File helpers: atomic writes (temporary path, then rename), scratch directories beside the
outputs that a crashed run's next run deletes, and content hashes."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.errors import error_path, storage_error

# what a scratch directory's name holds after `.<name>.tmp-`: its process id, a random part
# rows of a table read and written at a time: bounds the memory a large table takes
TABLE_BATCH_ROWS = 262_144
SCRATCH = re.compile(r"(\d+)-[a-z0-9_]+")


def _scratch_prefix(beside: Path) -> str:
    return f".{beside.name}.tmp-"


def sweep_scratch(beside: Path) -> None:
    """Delete the scratch directories beside `beside` whose process is gone: what a killed
    run left. A live process's directory is kept, so two processes may write one output at
    once. This process's own id marks a leftover too: it holds no scratch directory for
    `beside` while it sweeps, and a container's processes get the same ids on every start."""
    prefix = _scratch_prefix(beside)
    try:
        entries = [e for e in beside.parent.iterdir() if e.name.startswith(prefix)]
    except FileNotFoundError:
        return
    for entry in entries:
        match = SCRATCH.fullmatch(entry.name.removeprefix(prefix))
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(match[1])
        if pid == os.getpid() or not _running(pid):
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    if os.name == "nt":  # there os.kill ends the process it is given: keep everything
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


@contextlib.contextmanager
def scratch_dir(beside: Path | str) -> Iterator[Path]:
    """A new empty directory `.<name>.tmp-<pid>-<random>` beside the path `beside`, deleted on
    leaving. The scratch directories that killed processes left there are deleted first
    (`sweep_scratch`), so a crash leaves nothing that outlives the next run: each scratch
    directory belongs to the output (or the purpose) its name starts with."""
    beside = Path(beside)
    try:
        beside.parent.mkdir(parents=True, exist_ok=True)
        sweep_scratch(beside)
        prefix = f"{_scratch_prefix(beside)}{os.getpid()}-"
        root = Path(tempfile.mkdtemp(prefix=prefix, dir=beside.parent))
    except OSError as err:
        raise (storage_error(err, beside) or err) from None
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(final: Path | str, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final` (in a `scratch_dir`); on success rename it into
    place, else delete it."""
    final = Path(final)
    with scratch_dir(final) as tmp_root:
        tmp = tmp_root / final.name
        try:
            if is_dir:
                tmp.mkdir()
            yield tmp
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as err:
            # writing this output found no permission or no space: say so in one line; an
            # error about another file (an input read inside the block) is left as it is
            named = error_path(err)
            ours = named is None or named.is_relative_to(tmp_root) or named == final
            if ours and (line := storage_error(err, final)) is not None:
                raise line from None
            raise


def write_text(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically, unless the file already holds it (its time stamp
    then stays, for a stage that runs on every `dvc repro`); True if written."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return True


def json_text(obj: Any) -> str:
    """Stable JSON text: sorted keys, fixed indentation, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_json(path: Path | str, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj), encoding="utf-8")


def write_csv(
    path: Path | str, rows: list[dict[str, Any]], columns: list[str] | None = None
) -> None:
    """Write rows as CSV atomically; `columns` (default: the first row's keys) name the header,
    and keys outside it are left out."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path | str) -> list[dict[str, str]]:
    """CSV rows as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_arrays(directory: Path, **arrays: np.ndarray) -> None:
    """One .npy per array: unlike .npz (a zip with timestamps) the bytes are reproducible."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array, allow_pickle=False)


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """An .npy file; `mmap`: mapped copy-on-write, read from disk as it is used."""
    return np.load(path, allow_pickle=False, mmap_mode="c" if mmap else None)


def write_rows(path: Path, chunks: Iterator[np.ndarray], rows: int, columns: int) -> None:
    """Write an (rows, columns) float32 .npy file from chunks of rows, never holding it whole;
    the bytes are those `np.save` writes for the same array."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, columns)}
    written = 0
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for chunk in chunks:
            if chunk.dtype != np.float32 or chunk.ndim != 2 or chunk.shape[1] != columns:
                raise ValueError(
                    f"chunk of {chunk.dtype} {chunk.shape}, expected (n, {columns}) float32"
                )
            handle.write(np.ascontiguousarray(chunk).tobytes())
            written += len(chunk)
    if written != rows:
        raise ValueError(f"{written} rows written to {path}, {rows} announced")


@contextlib.contextmanager
def array_writer(
    path: Path, shape: tuple[int, ...], dtype: Any
) -> Iterator[Callable[[np.ndarray], None]]:
    """A function that appends rows (along the first axis) to a new .npy file of `shape` and
    `dtype`, which then holds the bytes `np.save` writes for the whole array; the rows are
    written as they come, never held together. Raises ValueError unless exactly shape[0] rows
    were written."""
    dtype = np.dtype(dtype)
    written = 0
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": tuple(shape)})

        def write(rows: np.ndarray) -> None:
            nonlocal written
            if rows.dtype != dtype or rows.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"rows of {rows.dtype} {rows.shape}, expected {dtype} {shape}")
            handle.write(np.ascontiguousarray(rows).data)  # no copy of a contiguous chunk
            written += len(rows)

        yield write
    if written != shape[0]:
        raise ValueError(f"{written} rows written to {path}, {shape[0]} announced")


def array_chunks(path: Path, rows: int) -> Iterator[np.ndarray]:
    """The rows of an .npy file, `rows` at a time, read rather than mapped: the process holds
    one chunk, however large the file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(handle)
        if fortran:
            raise ValueError(f"{path} is in Fortran order: rows cannot be read in chunks")
        row = (shape[1:], int(np.prod(shape[1:], dtype=np.int64)))
        for start in range(0, shape[0], rows):
            count = min(rows, shape[0] - start)
            yield np.fromfile(handle, dtype, count * row[1]).reshape(count, *row[0])


def parquet_reader(path: Path) -> Any:
    """A pyarrow.parquet.ParquetFile to read in batches of rows. Without pre-buffering, which
    reads column chunks far ahead of the batch asked for (about the whole file's size held
    while reading a large file batch by batch)."""
    import pyarrow.parquet as pq  # a second to import, and only tables need it

    return pq.ParquetFile(path, pre_buffer=False)


def parquet_writer(path: Path, schema: Any) -> Any:
    """A pyarrow.parquet.ParquetWriter for a table written a batch (a row group) at a time.
    Floating-point columns are not dictionary-encoded: their dictionaries overflow and are
    dropped again in every row group, which made writing several times slower."""
    # a second to import, and only tables need them
    import pyarrow as pa
    import pyarrow.parquet as pq

    encoded = [f.name for f in schema if not pa.types.is_floating(f.type)]
    return pq.ParquetWriter(path, schema, use_dictionary=encoded)


def md5_file(path: Path | str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5_dir(path: Path | str) -> str:
    """The hash DVC records for a directory: md5 of its sorted (relpath, md5) listing + '.dir'."""
    root = Path(path)
    entries = [
        {"md5": md5_file(f), "relpath": f.relative_to(root).as_posix()}
        for f in sorted(root.rglob("*"))
        if f.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing).hexdigest() + ".dir"
