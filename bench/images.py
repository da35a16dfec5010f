"""Decoding images: the ingest stage's decode and resize (mlpipeline.data.images.decode_all, a
process per core over mlpipeline.imaging.decode) against a plain Pillow loop doing the same work
(open, EXIF orientation, convert to RGB, the centre crop resized with a bilinear filter, into a
numpy array) on the same generated JPEG files, side by side, in images per second per core; and
the peak memory of ingest and prepare at two sizes of the same folder, against the array's size.
Writes its section of docs/performance.md. The goal: the pipeline at least 0.9 of the plain
loop per core, and peak memory that does not grow with the number of images.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import smoke
from PIL import Image, ImageOps

from mlpipeline.data.images import decode_all
from mlpipeline.imaging import ImageShape

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.9
SIZE = (224, 224)
SOURCE = (375, 500)  # height, width of each generated photo


def make_files(folder: Path, count: int, classes: int = 4) -> list[Path]:
    """`count` JPEG photos of 500x375, smooth colour gradients with some noise (as a camera's
    pictures compress), spread over `classes` subfolders in turn; their paths in the order they
    were made, so that the first few hold every class."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0 : SOURCE[0], 0 : SOURCE[1]].astype(np.float32)
    files = []
    for i in range(count):
        tint = rng.uniform(0, 1, 3)
        base = np.stack([(rows * tint[0] + cols * tint[1]) % 256, cols * tint[2] % 256, rows % 256])
        noise = rng.normal(0, 12, base.shape)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        path = folder / f"c{i % classes}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        files.append(path)
    return files


def plain_loop(files: list[Path]) -> np.ndarray:
    """The same work as the pipeline's decode, written as a person would with Pillow alone."""
    out = np.empty((len(files), 3, *SIZE), dtype=np.uint8)
    for i, path in enumerate(files):
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image = ImageOps.fit(image, (SIZE[1], SIZE[0]), Image.Resampling.BILINEAR)
            out[i] = np.asarray(image).transpose(2, 0, 1)
    return out


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def speed(files: list[Path], scratch: Path, rounds: int, workers: int) -> dict[str, float]:
    """Images per second per core of the plain loop (one core) and of the pipeline's decode on
    one core and on `workers`, interleaved; the median of the per-round ratios."""
    shape = ImageShape(3, *SIZE)
    out = scratch / "x.npy"
    # same pixels, or the comparison means nothing
    decode_all(files, shape, out, workers=1)
    assert np.array_equal(np.load(out), plain_loop(files)), "the two decodes differ"
    rates: dict[str, list[float]] = {"plain": [], "one": [], "all": []}
    for _ in range(rounds):
        rates["plain"].append(len(files) / timed(lambda: plain_loop(files)))
        rates["one"].append(len(files) / timed(lambda: decode_all(files, shape, out, workers=1)))
        seconds = timed(lambda: decode_all(files, shape, out, workers=workers))
        rates["all"].append(len(files) / seconds / workers)
    ratio = {
        key: statistics.median(r / p for r, p in zip(rates[key], rates["plain"], strict=True))
        for key in ("one", "all")
    }
    return {
        **{key: statistics.median(v) for key, v in rates.items()},
        "ratio_one": ratio["one"],
        "ratio_all": ratio["all"],
    }


def memory_run(folder: Path, base: Path) -> None:
    """Ingest and prepare `folder` in this process (at 224x224, paths under `base`); print the
    peak resident memory of this process and of its decoding workers, in bytes."""
    from mlpipeline.config import compose_config
    from mlpipeline.stages.ingest import ingest
    from mlpipeline.stages.prepare import prepare

    overrides = [
        "data=images",
        f"data.source.path={folder}",
        f"data.source.size=[{SIZE[0]},{SIZE[1]}]",
    ]
    cfg = compose_config(ROOT / "conf", overrides)[1]
    paths = cfg.paths.rebased(base).model_copy(update={"raw": folder.parent})
    cfg = cfg.model_copy(update={"paths": paths})
    ingest(cfg)
    prepare(cfg)
    kib = 1024  # Linux reports ru_maxrss in KiB
    print(
        json.dumps(
            {
                "main": peak_rss(),
                "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib,
            }
        )
    )


def peak_rss() -> int:
    """This process's peak resident memory in bytes: Linux's VmHWM, as ru_maxrss keeps the
    peak of the process that started this one (the benchmark, holding its decoded arrays)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory(files: list[Path], sizes: list[int], scratch: Path) -> list[dict[str, float]]:
    """Peak memory of ingest and prepare on the first `n` files, for each n in `sizes`, each
    in a process of its own."""
    results = []
    for n in sizes:
        folder = scratch / f"raw-{n}" / "photos"
        for path in files[:n]:
            target = folder / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(path)
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-run", str(folder), str(scratch / f"out-{n}")],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode:
            raise SystemExit(f"ingest and prepare of {n} images failed:\n{proc.stderr}")
        peak = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append({"images": n, "array": n * 3 * SIZE[0] * SIZE[1], **peak})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEG files decoded per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--memory", type=int, nargs=2, default=(1000, 4000), help="two sizes")
    parser.add_argument("--memory-run", nargs=2, type=Path, help=argparse.SUPPRESS)
    if "--memory-run" in sys.argv:
        args = parser.parse_args()
        memory_run(*args.memory_run)
        return
    args = smoke.parse_args(parser)
    if args.smoke:
        args.images, args.rounds, args.memory = 40, 1, (40, 80)
    from record import stamp, write_section

    from mlpipeline.data.images import _workers

    workers = _workers()
    with tempfile.TemporaryDirectory(prefix="mlpipeline-bench-images-") as tmp:
        scratch = Path(tmp)
        files = make_files(scratch / "photos", max(args.images, *args.memory))
        rates = speed(files[: args.images], scratch, args.rounds, workers)
        peaks = memory(files, list(args.memory), scratch)
    mib = 1 << 20
    verdict = "meets" if rates["ratio_all"] >= GOAL else "misses"
    lines = [
        stamp(),
        "",
        f"{args.images:,} generated JPEG photos of {SOURCE[1]}x{SOURCE[0]}, decoded, turned "
        f"as their EXIF says, converted to RGB and centre-cropped to {SIZE[1]}x{SIZE[0]} "
        f"(bilinear), {args.rounds} interleaved rounds; the same pixels both ways.",
        "",
        "| decode and resize | images/s per core | against plain Pillow |",
        "|---|---:|---:|",
        f"| plain Pillow loop, one core | {rates['plain']:.1f} | 1.00 |",
        f"| ingest's decode, one core | {rates['one']:.1f} | {rates['ratio_one']:.2f} |",
        f"| ingest's decode, {workers} cores | {rates['all']:.1f} | {rates['ratio_all']:.2f} |",
        "",
        f"The goal is {GOAL} of the plain loop per core on all cores: this run {verdict} it.",
        "",
        f"Peak resident memory of ingest and prepare at {SIZE[1]}x{SIZE[0]}x3 (the main "
        "process, and the largest decoding worker):",
        "",
        "| images | array | main process | a worker |",
        "|---:|---:|---:|---:|",
        *(
            f"| {p['images']:,} | {p['array'] / mib:.0f} MiB | {p['main'] / mib:.0f} MiB | "
            f"{p['workers'] / mib:.0f} MiB |"
            for p in peaks
        ),
    ]
    write_section(
        "images", "Images: decoding against plain Pillow, and ingest's memory", "\n".join(lines)
    )


if __name__ == "__main__":
    main()
