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
    """The revision the tasks ran, the lock entry of each stage run so far, and the files
    that differ from that revision (text or base64; None for a deleted file)."""

    revision: str
    stages: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, str] | None] = field(default_factory=dict)

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


def file_entry(data: bytes | None) -> dict[str, str] | None:
    """A file's content as the hand-off holds it: text when it is UTF-8, else base64."""
    if data is None:
        return None
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def file_bytes(entry: dict[str, str] | None) -> bytes | None:
    """The content `file_entry` recorded (None: deleted)."""
    if entry is None:
        return None
    if "text" in entry:
        return entry["text"].encode("utf-8")
    return base64.b64decode(entry["base64"])


def merge(revision: str | None, upstream: Iterable[Handoff]) -> Handoff:
    """The upstream tasks' hand-offs as one, checked: all ran `revision` (None: the first
    one's), and no two hold different content for one file or lock entry (parallel branches
    meet here)."""
    upstream = list(upstream)
    if revision is None:
        revision = upstream[0].revision if upstream else ""
    stages: dict[str, Any] = {}
    files: dict[str, dict[str, str] | None] = {}
    for handoff in upstream:
        if handoff.revision != revision:
            raise PipelineError(
                f"an upstream task ran revision {handoff.revision}, another {revision}: every worker must run one git revision (update the checkout, or "
                "rebuild the image)"
            )
        for kind, ours, theirs in (("lock entry", stages, handoff.stages),
                                   ("file", files, handoff.files)):  # fmt: skip
            for key, value in theirs.items():
                if key in ours and ours[key] != value:
                    raise PipelineError(
                        f"two upstream tasks hand on different versions of {kind} {key}: "
                        "stages that run in parallel must not write the same file"
                    )
                ours[key] = value
    return Handoff(revision, stages, files)


def check_size(files: dict[str, dict[str, str] | None]) -> None:
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
