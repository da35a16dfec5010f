"""timm's networks for a project's images: any architecture with a new head for the classes,
its weights random, read from a local file, or fetched from the Hugging Face hub."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipeline.errors import PipelineError

if TYPE_CHECKING:
    from torch import nn

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
HUB = "hf-hub:"


def timm_network(
    name: str,
    in_chans: int,
    num_classes: int,
    pretrained: bool | str = False,
    weights_dir: Path | str = "weights",
) -> nn.Module:
    """timm's `name` taking `in_chans` channels, with a new head of `num_classes` outputs.
    `pretrained`: False (random weights); the path of a weights file (.safetensors, .pth)
    inside `weights_dir`, whose head is dropped when it has another number of classes and
    whose first convolution is adapted to `in_chans`; True (timm's default weights for
    `name`) or `hf-hub:<repo>` (that repository's), both downloaded, so a network is needed."""
    if pretrained is True or (isinstance(pretrained, str) and pretrained.startswith(HUB)):
        return _from_hub(name, in_chans, num_classes, pretrained)
    model = _create(name, in_chans=in_chans, num_classes=num_classes, pretrained=False)
    if pretrained:
        load_weights(model, weights_file(pretrained, weights_dir), in_chans)
    return model


def weights_file(path: Path | str, weights_dir: Path | str) -> Path:
    """`path` checked: a weights file of a known format inside `weights_dir`, the folder the
    train stage depends on, so that a new file retrains."""
    path, folder = Path(path), Path(weights_dir)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise PipelineError(
            f"model.pretrained: {path} is outside {folder}/, the folder training depends on "
            f"(paths.weights): move it there (e.g. {folder / path.name}) so a new file retrains"
        )
    if path.suffix not in WEIGHT_SUFFIXES:
        raise PipelineError(
            f"model.pretrained: {path} is not a weights file: use {' or '.join(WEIGHT_SUFFIXES)}"
        )
    if not path.is_file():
        raise PipelineError(
            f"model.pretrained: {path} not found: save the weights there "
            "(safetensors.torch.save_file(model.state_dict(), path)) and track it with `dvc add`"
        )
    return path


def load_weights(model: nn.Module, path: Path, in_chans: int) -> None:
    """Load a state dict from `path` into timm's `model`: a classifier head of another shape is
    dropped (the model's new one stays), a first convolution of other input channels is
    adapted (timm's adapt_input_conv); any other difference is refused in one line."""
    # timm's import takes seconds, and the project's code imports this module through the api
    from timm.models import adapt_input_conv

    state = _read_state(path)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    own = model.state_dict()
    first = f"{cfg.get('first_conv')}.weight"
    if first in state and first in own and state[first].shape[1] != in_chans:
        state[first] = adapt_input_conv(in_chans, state[first].float())
    heads = cfg.get("classifier") or ()
    for head in (heads,) if isinstance(heads, str) else heads:
        for key in (f"{head}.weight", f"{head}.bias"):
            if key in state and key in own and state[key].shape != own[key].shape:
                del state[key]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and not _under(k, heads)]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        problems = [
            f"{label} {_few(keys)}"
            for label, keys in (
                ("of other shapes:", mismatched),
                ("missing:", missing),
                ("unexpected:", unexpected),
            )
            if keys
        ]
        raise PipelineError(
            f"model.pretrained: {path} does not fit timm's {type(model).__name__} "
            f"({'; '.join(problems)}): were the weights saved from another architecture?"
        )
    model.load_state_dict(state, strict=False)


def _read_state(path: Path) -> dict[str, Any]:
    """The tensors of a .safetensors or torch.save file, unwrapped from a checkpoint's
    `state_dict` or `model` entry."""
    # torch's import takes seconds, and the data stages import this module through the api
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # as torch

            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = " ".join(str(err).split())[:200]
        raise PipelineError(f"model.pretrained: cannot read {path}: {reason}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"model.pretrained: {path} holds no state dict of tensors")
    return dict(state)


def _from_hub(name: str, in_chans: int, num_classes: int, pretrained: bool | str) -> nn.Module:
    """timm's download of pretrained weights, its failure (no network) as one line."""
    source = pretrained if isinstance(pretrained, str) else name
    try:
        return _create(source, in_chans=in_chans, num_classes=num_classes, pretrained=True)
    except PipelineError:
        raise
    except Exception as err:
        reason = " ".join(str(err).split())[:200]
        raise PipelineError(
            f"model.pretrained: cannot download the weights of {source} ({type(err).__name__}: "
            f"{reason}); on a machine without network save them to a file under paths.weights "
            "and name it in model.pretrained"
        ) from None


def _create(name: str, **kwargs: Any) -> nn.Module:
    # timm's import takes seconds, and the project's code imports this module through the api
    import timm

    if not name.startswith(HUB) and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise PipelineError(
            f"model.name: timm has no architecture {name!r}; {hint}timm.list_models() lists them"
        )
    return timm.create_model(name, **kwargs)


def _under(key: str, heads: Any) -> bool:
    heads = (heads,) if isinstance(heads, str) else heads
    return any(key.startswith(f"{head}.") for head in heads)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
