"""What one task hands to the next: dvc.lock's entries of the stages run so far and the
workspace files git would commit (params.yaml, uncached metrics and plots), so that a task on
another worker, sharing only the git revision and the DVC remote, starts from the same state.
Cached outputs never travel here: they go through the DVC remote.

On the wire it is one line of JSON (an XCom value, or a container's last line of output)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mlpipeline.errors import PipelineError

FORMAT = 1
# what a task may hand on besides the lock entries: XComs live in Airflow's database
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Handoff:
    """The revision the tasks ran, the lock entry of each stage run so far, and every file
    that differs from that revision, each with the stage that wrote that version (`entry`)."""

    revision: str
    stages: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def encode(self) -> str:
        """One line of JSON."""
        return json.dumps(
            {"format": FORMAT, "revision": self.revision, "stages": self.stages,
             "files": self.files},
            separators=(",", ":"),
        )  # fmt: skip

    @staticmethod
    def decode(text: str) -> Handoff:
        """The hand-off in `encode`'s line; PipelineError if it is not one."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return Handoff(data["revision"], data["stages"], data["files"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise PipelineError(f"not a hand-off from an upstream task ({err})") from None


# a file's state in a hand-off: {"text": ...} or {"base64": ...} (its content), {"deleted":
# true} (a committed file removed), or {} (as the revision has it: the committed content, or
# no file); each entry also names the stage that wrote that version
DELETED: dict[str, Any] = {"deleted": True}


def file_entry(data: bytes | None, stage: str) -> dict[str, Any]:
    """A file's content as a hand-off holds it (None: deleted), written by `stage`."""
    if data is None:
        return {**DELETED, "stage": stage}
    try:
        return {"text": data.decode("utf-8"), "stage": stage}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii"), "stage": stage}


def state(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry without the name of its writer: what the file is."""
    return {k: v for k, v in entry.items() if k != "stage"}


def file_bytes(entry: dict[str, Any]) -> bytes | None:
    """The content an entry with content holds; None for the others."""
    if "text" in entry:
        return entry["text"].encode("utf-8")
    if "base64" in entry:
        return base64.b64decode(entry["base64"])
    return None


def merge(revision: str | None, upstream: Iterable[Handoff]) -> Handoff:
    """The upstream tasks' hand-offs as one, checked: all ran `revision` (None: the first
    one's). Where two hold different versions of a file, the one whose lineage includes the
    other version's writer is the newer; if neither does, two stages in parallel wrote the
    file, which is an error (so is a stage with two different lock entries)."""
    upstream = list(upstream)
    if revision is None:
        revision = upstream[0].revision if upstream else ""
    stages: dict[str, Any] = {}
    files: dict[str, dict[str, Any]] = {}
    source: dict[str, Handoff] = {}
    for handoff in upstream:
        if handoff.revision != revision:
            raise PipelineError(
                f"an upstream task ran revision {handoff.revision}, another {revision}: every "
                "worker must run one git revision (update the checkout, or rebuild the image)"
            )
        for name, entry in handoff.stages.items():
            if stages.setdefault(name, entry) != entry:
                raise PipelineError(f"two upstream tasks hand on different lock entries of {name}")
        for path, entry in handoff.files.items():
            ours = files.get(path)
            if ours is None or state(ours) == state(entry) or ours["stage"] in handoff.stages:
                files[path], source[path] = entry, handoff
            elif entry["stage"] not in source[path].stages:
                raise PipelineError(
                    f"stages {ours['stage']} and {entry['stage']} both wrote {path}: stages "
                    "that can run in parallel must not write the same file"
                )
    return Handoff(revision, stages, files)


def check_size(files: dict[str, dict[str, Any]]) -> None:
    """PipelineError if the files are too large to travel as a hand-off."""
    sizes = {p: len(file_bytes(e) or b"") for p, e in files.items()}
    if sum(sizes.values()) > MAX_FILE_BYTES:
        largest = sorted(sizes, key=sizes.__getitem__, reverse=True)[:3]
        raise PipelineError(
            f"the files to hand on hold {sum(sizes.values()) / 1e6:.1f} MB, over the "
            f"{MAX_FILE_BYTES / 1e6:.1f} MB a hand-off may carry (largest: "
            f"{', '.join(largest)}): make large outputs cached DVC outputs, which travel "
            "through the DVC remote"
        )
