"""mlpipeline.artifacts: atomic writes, and the scratch directories a killed writer leaves,
which the next write of the same output deletes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from mlpipeline.artifacts import read_json, write_json

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
