"""mlpipeline.artifacts: atomic writes, the scratch directories a killed writer leaves, which
the next write of the same output deletes, and outputs that cannot be written: one line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import mixed_table, one_line_error, tiny_params

from mlpipeline.artifacts import read_json, write_json
from mlpipeline.errors import storage_error

# enters an atomic write of argv[1], then dies there (SIGKILL) or waits to be killed
WRITER = """
import os, signal, sys, time
from mlpipeline.artifacts import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    print("writing", flush=True)
    time.sleep(600)
"""


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_a_killed_writers_leftovers_go_at_the_next_write_and_a_live_writers_stay(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.json"
    killed = subprocess.run([sys.executable, "-c", WRITER, str(out), "die"], check=False)
    assert killed.returncode == -signal.SIGKILL
    (dead,) = leftovers(out)
    mine = tmp_path / ".out.json.backup"  # a person's own file that looks alike stays
    mine.mkdir()
    live = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), "wait"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout.readline() == "writing\n"
        (writing,) = set(leftovers(out)) - {dead, mine.name}
        write_json(out, {"a": 1})
        assert read_json(out) == {"a": 1}
        assert leftovers(out) == sorted([mine.name, writing])  # the dead one's went
    finally:
        live.kill()
        live.wait()
    write_json(out, {"a": 2})
    assert leftovers(out) == [mine.name]
    assert read_json(out) == {"a": 2}


def ingest_command(base: Path) -> tuple[list[str], Any]:
    """The ingest stage's command on a generated table under `base`, and its config."""
    (base / "raw").mkdir()
    mixed_table(2000).to_csv(base / "raw" / "data.csv", index=False)
    params, cfg = tiny_params(
        base,
        "data=tabular",
        f"data.source.path={base}/raw/data.csv",
        "data.source.label=target",
    )
    return [sys.executable, "-m", "mlpipeline.stages.ingest", "--params", str(params)], cfg


def test_a_read_only_output_directory_stops_the_stage_with_one_line(tmp_path: Path) -> None:
    command, cfg = ingest_command(tmp_path)
    data = cfg.paths.ingested.parent
    data.mkdir(mode=0o555)
    # root writes where permissions forbid it: as root the stage runs without that capability
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        data.chmod(0o755)
    one_line_error(
        proc, f"cannot write {cfg.paths.ingested}: Permission denied; make {data}/ writable"
    )
    assert list(data.iterdir()) == []


# the ingest stage with files limited to 4 KiB: writing its output fails as on a full disk
LIMITED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
sys.argv = ["ingest", *sys.argv[1:]]
runpy.run_module("mlpipeline.stages.ingest", run_name="__main__")
"""


def test_an_output_that_finds_no_room_stops_the_stage_with_one_line(tmp_path: Path) -> None:
    command, cfg = ingest_command(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED, *command[3:]], capture_output=True, text=True, check=False
    )
    one_line_error(proc, f"cannot write {cfg.paths.ingested}:", "File too large", "ulimit -f")
    assert list(cfg.paths.ingested.parent.iterdir()) == []


def test_a_full_disk_and_a_read_only_one_are_told_apart() -> None:
    full = storage_error(OSError(errno.ENOSPC, "No space left on device"), Path("data/ingested"))
    assert str(full) == (
        "cannot write data/ingested: No space left on device; free space on the disk that "
        "holds data/"
    )
    read_only = storage_error(OSError(errno.EROFS, "Read-only file system"), "models/model.pt")
    assert "make models/ writable" in str(read_only)
    assert storage_error(OSError(errno.ENOENT, "No such file or directory")) is None
