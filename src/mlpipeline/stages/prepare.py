"""Stage `prepare`: check data quality, split stratified by seed, fit normalisation on train.

Features stay raw: the network normalises its own input with the constants, so the exported
model takes raw features and serving cannot skew.
"""

from __future__ import annotations

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.sources import read_dataset
from mlpipeline.data.splits import Prepared, prepare_arrays, write_prepared


def prepare(cfg: Config) -> Prepared:
    """Read `paths.ingested`, write the checked, split data to `paths.prepared`."""
    x, y, meta = read_dataset(cfg.paths.ingested)
    result = prepare_arrays(x, y, meta, cfg.data.split, cfg.seed)
    write_prepared(result, cfg.paths.prepared)
    sizes = result.meta["sizes"]
    print(
        f"prepared {sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test samples, "
        f"{len(meta['classes'])} classes -> {cfg.paths.prepared}"
    )
    return result


if __name__ == "__main__":
    run_stage(prepare)
