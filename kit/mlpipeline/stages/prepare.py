"""Stage `prepare`: check the labels, split train/val/test by seed (stratified for classes).

Images: the normalisation constants are fitted on train here; the network normalises its own
input, so the exported model takes raw pixels. Tables: the label becomes class indices (in
natural order) or float32 targets; the columns stay as read for the `features` stage.
"""

from __future__ import annotations

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.config.tasks import task_for
from mlpipeline.data.sources import source_for
from mlpipeline.data.splits import Prepared, PreparedTable


def prepare(cfg: Config) -> Prepared | PreparedTable:
    """Read `paths.ingested`, write the checked, split data to `paths.prepared`."""
    result, what = source_for(cfg).prepare(cfg, task_for(cfg.task))
    sizes = result.meta["sizes"]
    print(
        f"prepared {sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test samples, "
        f"{what} -> {cfg.paths.prepared}"
    )
    return result


if __name__ == "__main__":
    run_stage(prepare)
