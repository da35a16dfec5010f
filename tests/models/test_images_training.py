"""Training on images: the network takes uint8 pixels (a cast before Normalize, exported as an
ONNX Cast), training images augmented from conf/ in the loader's workers (seeded: the same
bytes twice), timm's networks with weights from a local file, and fine-tuning (the backbone
frozen, then at a lower learning rate). Data: uint8 arrays written in the prepared/features
format, and weights saved from locally created timm models (nothing is downloaded)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from mlpipeline.config import check_targets
from mlpipeline.data.datamodule import (
    ArrayDataModule,
    AugmentedBatches,
    TensorBatches,
    augmentation,
)
from mlpipeline.errors import PipelineError
from mlpipeline.models.finetune import BackboneFinetuning
from mlpipeline.models.modelfile import ToFloat, build_network, load_model, save_model
from mlpipeline.models.pretrained import timm_network
from mlpipeline.models.training import fit

CHANNELS, SIZE, CLASSES = 3, 16, 3
AUGMENT = (
    "data.augment=[{_target_:torchvision.transforms.v2.RandomResizedCrop,size:[16,16],"
    "scale:[0.6,1.0]},{_target_:torchvision.transforms.v2.RandomHorizontalFlip},"
    "{_target_:torchvision.transforms.v2.ColorJitter,brightness:0.3,contrast:0.3}]"
)


def write_images(directory: Path, rows: int = 48, channels: int = CHANNELS) -> None:
    """uint8 images (N, C, H, W) whose brightness follows the class, per split, and meta.json
    as the prepared/features stages of an image source write them."""
    rng = np.random.default_rng(0)
    sizes = {"train": rows, "val": rows // 4, "test": rows // 4}
    for split, n in sizes.items():
        y = np.arange(n) % CLASSES
        x = rng.integers(0, 80, (n, channels, SIZE, SIZE)) + (y * 80)[:, None, None, None]
        (directory / split).mkdir(parents=True, exist_ok=True)
        np.save(directory / split / "x.npy", x.astype(np.uint8))
        np.save(directory / split / "y.npy", y.astype(np.int64))
    meta = {
        "source": "images",
        "classes": [f"c{i}" for i in range(CLASSES)],
        "feature_names": None,
        "input_shape": [channels, SIZE, SIZE],
        "input_dtype": "uint8",
        "normalization": {"mean": [120.0] * channels, "std": [70.0] * channels},
        "sizes": sizes,
    }
    (directory / "meta.json").write_text(json.dumps(meta))


def state_bytes(network: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, buffer)
    return buffer.getvalue()


def image_spec(**net: Any) -> dict[str, Any]:
    return {
        "net": {"_target_": "myproject.models.nets.CNN", **net},
        "in_shape": [CHANNELS, 8, 8],
        "num_classes": CLASSES,
        "normalization": {"mean": [100.0, 110.0, 120.0], "std": [50.0, 60.0, 70.0]},
        "input_dtype": "uint8",
    }


# uint8 input


def test_a_uint8_network_casts_normalises_per_channel_exports_and_round_trips(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    network = build_network(image_spec()).eval()
    assert isinstance(network[0], ToFloat)
    x = torch.randint(0, 256, (5, CHANNELS, 8, 8), dtype=torch.uint8)
    mean = torch.tensor([100.0, 110.0, 120.0]).view(3, 1, 1)
    std = torch.tensor([50.0, 60.0, 70.0]).view(3, 1, 1)
    expected = network[2]((x.float() - mean) / std)
    assert torch.allclose(network(x), expected)

    save_model(tmp_path / "model.pt", image_spec(), network)
    loaded, spec = load_model(tmp_path / "model.pt")
    assert spec["input_dtype"] == "uint8"
    assert torch.equal(loaded(x), network(x))

    path = tmp_path / "model.onnx"
    torch.onnx.export(network, (x,), str(path), input_names=["image"], dynamo=False)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert "Cast" in {node.op_type for node in graph.node}
    (onnx_out,) = ort.InferenceSession(str(path)).run(None, {"image": x.numpy()})
    np.testing.assert_allclose(onnx_out, network(x).detach().numpy(), atol=1e-5)


def test_a_float_network_is_built_as_before() -> None:
    spec = image_spec()
    del spec["input_dtype"]
    network = build_network(spec)
    assert not any(isinstance(layer, ToFloat) for layer in network)
    assert "0.mean" in network.state_dict()


# augmentation


def test_augmentation_is_checked_against_torchvision_before_any_work(make_cfg) -> None:
    cfg = make_cfg(AUGMENT)
    check_targets(cfg)
    assert [s.target.rsplit(".", 1)[1] for s in cfg.data.augment] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "ColorJitter",
    ]
    bad = make_cfg("data.augment=[{_target_:torchvision.transforms.v2.RandomHorizontalFlip,q:1}]")
    with pytest.raises(PipelineError, match=r"data\.augment\.0\.q: .* takes no argument 'q'"):
        check_targets(bad)
    wrong_kind = make_cfg("data.augment=[{_target_:torch.nn.Linear,in_features:1,out_features:1}]")
    with pytest.raises(PipelineError, match=r"not a torchvision\.transforms\.v2\.Transform class"):
        check_targets(wrong_kind)


def test_only_the_training_split_is_augmented_and_stays_uint8(make_cfg) -> None:
    cfg = make_cfg(AUGMENT)
    write_images(cfg.paths.features)
    transform = augmentation([s.spec() for s in cfg.data.augment])
    data = ArrayDataModule(cfg.paths.features, 8, augment=transform)
    data.setup("fit")
    assert isinstance(data.data["train"], AugmentedBatches)
    assert type(data.data["val"]) is TensorBatches and type(data.data["test"]) is TensorBatches
    x, _ = data.data["train"].__getitems__(list(range(8)))
    original, _ = TensorBatches.__getitems__(data.data["train"], list(range(8)))
    assert x.dtype == torch.uint8 and x.shape == original.shape
    assert not torch.equal(x, original)


def test_an_augmentation_that_changes_the_shape_is_refused_in_one_line(make_cfg) -> None:
    cfg = make_cfg("data.augment=[{_target_:torchvision.transforms.v2.RandomResizedCrop,size:8}]")
    write_images(cfg.paths.features)
    with pytest.raises(PipelineError, match=r"turns a \(3, 16, 16\) torch.uint8 image into"):
        fit(cfg)


def test_augmented_training_in_worker_processes_trains_the_same_bytes_twice(make_cfg) -> None:
    cfg = make_cfg(AUGMENT, "data.num_workers=2", "data.batch_size=8")
    write_images(cfg.paths.features)
    first, second = (state_bytes(fit(cfg).network) for _ in range(2))
    assert first == second
    plain = make_cfg("data.num_workers=2", "data.batch_size=8")
    assert state_bytes(fit(plain).network) != first  # the augmentation took part


# timm networks and pretrained weights


def saved_weights(folder: Path, name: str = "resnet18", suffix: str = ".safetensors") -> Path:
    """The weights of a locally created timm model with 7 classes, as a user saves them."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    state = timm.create_model(name, pretrained=False, num_classes=7).state_dict()
    path = folder / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_from_a_local_file_keep_the_backbone_and_get_a_new_head(
    tmp_path: Path, suffix: str
) -> None:
    path = saved_weights(tmp_path / "weights", suffix=suffix)
    torch.manual_seed(1)
    saved = timm.create_model("resnet18", pretrained=False, num_classes=7)
    model = timm_network("resnet18", 1, CLASSES, str(path), tmp_path / "weights")
    assert torch.equal(model.layer3[0].conv1.weight, saved.layer3[0].conv1.weight)
    assert model.fc.out_features == CLASSES
    # a grayscale input: timm sums the RGB filters of the first convolution
    assert model.conv1.weight.shape[1] == 1
    assert torch.allclose(model.conv1.weight, saved.conv1.weight.sum(1, keepdim=True))


def test_a_model_file_loads_without_the_weights_file_it_started_from(tmp_path: Path) -> None:
    weights = saved_weights(tmp_path / "weights")
    net = {"_target_": "myproject.models.nets.Timm", "name": "resnet18"}
    spec = {
        **image_spec(),
        "in_shape": [CHANNELS, SIZE, SIZE],
        "net": {**net, "pretrained": str(weights), "weights_dir": str(weights.parent)},
    }
    network = build_network(spec).eval()
    save_model(tmp_path / "model.pt", spec, network)
    weights.unlink()
    loaded, _ = load_model(tmp_path / "model.pt")
    x = torch.randint(0, 256, (2, CHANNELS, SIZE, SIZE), dtype=torch.uint8)
    assert torch.equal(loaded(x), network(x))


def test_bad_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    other = saved_weights(folder, "resnet34")
    outside = saved_weights(tmp_path / "elsewhere")
    cases = {
        str(outside): r"is outside .*weights/, the folder training depends on",
        str(folder / "absent.safetensors"): r"not found: save the weights there",
        str(other): r"does not fit timm's ResNet \(unexpected: layer1\.2\.",
    }
    (folder / "broken.pth").write_bytes(b"not a checkpoint")
    cases[str(folder / "broken.pth")] = r"cannot read .*broken\.pth"
    for pretrained, message in cases.items():
        with pytest.raises(PipelineError, match=message) as err:
            timm_network("resnet18", 3, CLASSES, pretrained, folder)
        assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match=r"no architecture 'resnet81'; did you mean resnet18"):
        timm_network("resnet81", 3, CLASSES)


def test_hub_weights_without_network_fail_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PipelineError, match=r"cannot download the weights of resnet18 .* without"):
        timm_network("resnet18", 3, CLASSES, True)


class Probe(L.Callback):
    """Records, at each epoch's end, the first convolution's and the head's weights and the
    optimizer's learning rates."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.network[-1].model
        self.rows.append(
            {
                "conv": model.conv1.weight.detach().clone(),
                "fc": model.fc.weight.detach().clone(),
                "lrs": [g["lr"] for g in trainer.optimizers[0].param_groups],
            }
        )


def test_fine_tuning_freezes_the_backbone_then_trains_it_at_a_lower_rate(
    make_cfg, tmp_path: Path
) -> None:
    weights = saved_weights(tmp_path / "weights")
    cfg = make_cfg(
        "model=timm",
        f"model.pretrained={weights}",
        f"model.weights_dir={weights.parent}",
        "callbacks.finetune.freeze_epochs=1",
        "callbacks.finetune.backbone_lr_ratio=0.1",
        "trainer.max_epochs=3",
        "callbacks.early_stopping=null",
        "data.batch_size=16",
    )
    write_images(cfg.paths.features)
    start = timm.create_model("resnet18", pretrained=False, num_classes=7)
    start.load_state_dict(load_file(weights))
    probe = Probe()
    fit(cfg, callbacks=[probe])
    first, second, third = probe.rows
    assert torch.equal(first["conv"], start.conv1.weight)  # frozen in epoch 0
    assert not torch.equal(second["conv"], first["conv"])  # trained from epoch 1
    assert not torch.equal(second["fc"], first["fc"])
    for row in probe.rows:
        head, backbone = row["lrs"]
        assert backbone == pytest.approx(head * 0.1)
    assert third["lrs"][0] < first["lrs"][0]  # the cosine schedule scales both groups


def test_fine_tuning_a_network_without_a_head_is_refused(make_cfg) -> None:
    cfg = make_cfg(
        "+callbacks.finetune._target_=mlpipeline.models.finetune.BackboneFinetuning",
        "+callbacks.finetune.freeze_epochs=1",
    )
    write_images(cfg.paths.features)
    with pytest.raises(PipelineError, match=r"callbacks.finetune: the network has no classifier"):
        fit(cfg)
    assert BackboneFinetuning().ratio == 1  # the defaults change nothing
