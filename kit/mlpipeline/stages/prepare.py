"""Stage `prepare`: check the labels, split train/val/test by seed (stratified for classes).

Images: the normalisation constants are fitted on train here; the network normalises its own
input, so the exported model takes raw pixels. Tables: the label becomes class indices (in
natural order) or float32 targets; the columns stay as read for the `features` stage.
"""

from __future__ import annotations

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.sources import Table, read_ingested
from mlpipeline.data.splits import (
    Prepared,
    PreparedTable,
    prepare_arrays,
    prepare_table,
    write_prepared,
    write_prepared_table,
)


def prepare(cfg: Config) -> Prepared | PreparedTable:
    """Read `paths.ingested`, write the checked, split data to `paths.prepared`."""
    data, meta = read_ingested(cfg.paths.ingested)
    if isinstance(data, Table):
        result = prepare_table(data, cfg.task, cfg.data.split, cfg.seed)
        write_prepared_table(result, cfg.paths.prepared)
        what = f"{len(result.meta['classes'])} classes" if result.meta["classes"] else "a target"
    else:
        result = prepare_arrays(data.x, data.y, meta, cfg.data.split, cfg.seed)
        write_prepared(result, cfg.paths.prepared)
        what = f"{len(meta['classes'])} classes"
    sizes = result.meta["sizes"]
    print(
        f"prepared {sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test samples, "
        f"{what} -> {cfg.paths.prepared}"
    )
    return result


if __name__ == "__main__":
    run_stage(prepare)
