"""The explain stage on models trained for real: a table whose label depends on two known
columns (their attributions rank first, the one-hot slots and missing indicators grouped back
into their columns) and images whose class is decided by one region (the heatmaps put it
there); the same inputs write the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import CONF, tiny
from PIL import Image

from mlpipeline.config import compose_config
from mlpipeline.explain import REGIONS, ColumnAblation, RegionOcclusion, training_mean
from mlpipeline.stages.explain import explain
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.stages.train import train


def trained(base: Path, *overrides: str):
    """Compose conf/ with `overrides`, paths under `base`; ingest, prepare, features, train."""
    cfg = tiny(compose_config(CONF, list(overrides))[1], base)
    for stage in (ingest, prepare, features, train):
        stage(cfg)
    return cfg


def known_table(rows: int = 600, seed: int = 0):
    """The label is decided by `a` (a number) and `colour` (a category); `n1`, `n2` and `m`
    (with missing values) are noise; `a` has a few missing values too."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    effect = np.select([colour == "red", colour == "blue"], [1.5, -1.5], 0.0)
    label = np.where(a + effect + rng.normal(0, 0.2, rows) > 0, "yes", "no")
    frame = pd.DataFrame(
        {
            "n1": rng.normal(0, 1, rows),
            "a": a,
            "m": rng.normal(0, 1, rows),
            "colour": colour,
            "n2": rng.uniform(-1, 1, rows),
            "label": label,
        }
    )
    frame.loc[rng.random(rows) < 0.2, "m"] = None
    frame.loc[rng.random(rows) < 0.03, "a"] = None
    return frame


def stage_line(capsys) -> str:
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("explained")]
    return line


def test_a_tables_attributions_rank_the_columns_its_label_depends_on(
    tmp_path: Path, capsys
) -> None:
    (tmp_path / "raw").mkdir()
    known_table().to_csv(tmp_path / "raw" / "data.csv", index=False)
    cfg = trained(
        tmp_path, "data=tabular", "model=mlp", f"data.source.path={tmp_path}/raw/data.csv",
        "data.source.label=label", "trainer.max_epochs=40", "data.batch_size=64",
    )  # fmt: skip
    meta = json.loads((cfg.paths.features / "meta.json").read_text())
    # grouped by the preprocessing's structure: a's value and indicator, m's, colour's slots
    assert meta["feature_columns"].count("colour") == 5  # 3 colours, (other), (missing)
    assert meta["feature_columns"].count("a") == meta["feature_columns"].count("m") == 2
    assert len(meta["feature_columns"]) == len(meta["feature_names"])
    capsys.readouterr()

    explain(cfg)
    values = json.loads(cfg.paths.attributions.read_text())["attribution"]
    assert list(values) == ["n1", "a", "m", "colour", "n2"], "the source columns, in order"
    ranked = sorted(values, key=lambda n: -values[n])
    assert set(ranked[:2]) == {"a", "colour"}, values
    assert min(values["a"], values["colour"]) > 2 * max(values[n] for n in ("n1", "n2", "m"))
    line, test_rows = stage_line(capsys), len(np.load(cfg.paths.features / "test/y.npy"))
    assert line.startswith(f"explained {test_rows} test rows")
    assert "(feature ablation of 5 columns): top " in line and str(cfg.paths.attributions) in line
    out = cfg.paths.explain
    assert sorted(p.name for p in out.iterdir()) == ["explain.json", "importance.csv",
                                                     "importance.png"]  # fmt: skip
    csv_rows = (out / "importance.csv").read_text().splitlines()
    assert csv_rows[0] == "name,importance" and [r.split(",")[0] for r in csv_rows[1:]] == ranked
    assert (out / "importance.png").read_bytes().startswith(b"\x89PNG")
    settings = json.loads((out / "explain.json").read_text())
    assert (settings["rows"], settings["seed"]) == (test_rows, cfg.seed)
    assert settings["method"].startswith("feature ablation")

    # the same inputs, the same bytes
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    attributions = cfg.paths.attributions.read_bytes()
    explain(cfg)
    assert cfg.paths.attributions.read_bytes() == attributions
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def square_images(root: Path, per_class: int = 120, side: int = 16) -> None:
    """RGB noise; class `square` has a bright 4x4 square inside the top-left third of the
    image, class `plain` none: only that region tells the classes apart."""
    rng = np.random.default_rng(0)
    for name in ("plain", "square"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (side, side, 3), dtype=np.uint8)
            if name == "square":
                pixels[1:5, 1:5] = 250
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_an_image_classs_region_gets_the_attribution(tmp_path: Path, capsys) -> None:
    square_images(tmp_path / "raw" / "squares")
    cfg = trained(
        tmp_path, "data=images", f"data.source.path={tmp_path}/raw/squares",
        "data.source.size=[16,16]", "data.augment=[]", "trainer.max_epochs=8",
        "data.batch_size=32", "explain.shown=3",
    )  # fmt: skip
    capsys.readouterr()
    explain(cfg)
    values = json.loads(cfg.paths.attributions.read_text())["attribution"]
    assert list(values) == list(REGIONS)
    assert max(values, key=lambda n: values[n]) == "top_left", values
    assert "(occlusion of 8x8 windows of 2x2 px)" in stage_line(capsys)
    out = cfg.paths.explain
    for name in ("heatmaps_correct.png", "heatmaps_wrong.png", "importance.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    assert json.loads((out / "explain.json").read_text())["window"] == [3, 2, 2]

    # the mean heatmap over the explained test images peaks inside the square's region
    from mlpipeline.config.tasks import task_for
    from mlpipeline.data.splits import read_split
    from mlpipeline.explain import explain_rows
    from mlpipeline.models.modelfile import load_model

    network, _ = load_model(cfg.paths.model)
    train_x, _ = read_split(cfg.paths.features, "train")
    test_x, _ = read_split(cfg.paths.features, "test")
    explainer = RegionOcclusion((3, 16, 16))
    result = explain_rows(network, task_for(cfg.task), explainer, train_x, test_x, 512)
    assert result.values == values
    heat = np.abs(explainer.heatmaps(result.attributions)).mean(axis=0)
    row, col = np.unravel_index(int(heat.argmax()), heat.shape)
    assert row < 6 and col < 6, (row, col)  # top_left: rows and columns 0..5 of 16


def test_occlusion_heatmaps_peak_where_the_network_looks() -> None:
    """A network that reads the top-left pixels alone: the mean heatmap's peak is there."""
    import torch

    class TopLeft(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = x[:, :, 1:5, 1:5].mean(dim=(1, 2, 3))
            return torch.stack([-score, score], dim=1)

    from mlpipeline.config.tasks import Classification
    from mlpipeline.explain import explain_rows

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (20, 3, 16, 16)).astype(np.float32)
    explainer = RegionOcclusion((3, 16, 16))
    result = explain_rows(TopLeft(), Classification(), explainer, x, x, 64)
    heat = np.abs(explainer.heatmaps(result.attributions)).mean(axis=0)
    row, col = np.unravel_index(int(heat.argmax()), heat.shape)
    assert row < 16 // 3 and col < 16 // 3
    assert max(result.values, key=lambda n: result.values[n]) == "top_left"
    assert explain_rows(TopLeft(), Classification(), explainer, x, x, 7).values == result.values


def test_a_columns_inputs_are_ablated_together() -> None:
    """Each column's inputs share its index; the value read is the whole column's effect."""
    explainer = ColumnAblation(["a", "b"], ["a", "b", "a", "b", "b"])
    assert explainer.mask().tolist() == [[0, 1, 0, 1, 1]]
    attributions = np.array([[2.0, -1.0, 2.0, -1.0, -1.0], [-4.0, 3.0, -4.0, 3.0, 3.0]])
    assert explainer.summary(attributions) == {"a": 3.0, "b": 2.0}


def test_the_baseline_is_the_training_mean_read_in_chunks(monkeypatch) -> None:
    import mlpipeline.explain as module

    monkeypatch.setattr(module, "MEAN_CHUNK_BYTES", 64)  # several chunks
    x = np.random.default_rng(0).uniform(0, 16, (50, 2, 4, 4)).astype(np.float32)
    per_channel = training_mean(x, (2, 3))
    assert per_channel.shape == (1, 2, 1, 1)
    assert np.allclose(per_channel.ravel(), x.mean(axis=(0, 2, 3)), atol=1e-5)
    assert np.allclose(training_mean(x.reshape(50, -1), ()), x.reshape(50, -1).mean(0), atol=1e-5)


def test_a_grid_without_rows_is_still_drawn_and_says_so(tmp_path: Path) -> None:
    """No wrong prediction in the sample: heatmaps_wrong.png is written, its title says so."""
    import torch

    from mlpipeline.config.tasks import Classification
    from mlpipeline.explain import picked_rows

    outputs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    picked = picked_rows(Classification(), outputs, np.array([0, 1, 0]), ["cat", "dog"], 2)
    assert picked[0] == ("Correct predictions (test sample): image and attribution",
                         [(0, "cat", "cat (0.90)"), (1, "dog", "dog (0.80)")])  # fmt: skip
    assert picked[1] == ("Wrong predictions: none among the 3 explained test rows", [])
    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32)
    written = RegionOcclusion((3, 16, 16)).draw(x, np.zeros((3, 3, 16, 16)), picked, tmp_path)
    assert [p.name for p in written] == ["heatmaps_correct.png", "heatmaps_wrong.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
