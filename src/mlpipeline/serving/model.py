"""The served model: an ONNX Runtime session and the model card that describes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from mlpipeline.serving.settings import Settings


class ModelError(Exception):
    """The model or its card is missing or inconsistent: the service cannot start."""


@dataclass(frozen=True)
class Model:
    """A loaded ONNX session and what its card says about it."""

    session: ort.InferenceSession
    input_name: str
    output_name: str
    example_shape: tuple[int, ...]
    classes: list[str]
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unknown"))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for a float32 batch of shape (n, *example_shape)."""
        return self.session.run([self.output_name], {self.input_name: x})[0]


def load_model(settings: Settings) -> Model:
    """Open the ONNX model and its card, check they agree, and run one warm-up batch.
    Raises ModelError with a one-line reason when anything is missing or inconsistent."""
    model_path, card_path = settings.model_path, settings.card_file
    if not model_path.is_file():
        raise ModelError(
            f"model not found at {model_path}: run `dvc repro` or set MODEL_PATH to an ONNX file"
        )
    if not card_path.is_file():
        raise ModelError(f"model card not found at {card_path}: set CARD_PATH")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        spec = card["input"]
        shape, classes = spec["shape"], [str(c) for c in card["classes"]]
        example_shape = tuple(int(d) for d in shape[1:])
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(
            f"{card_path} is not a model card with input.shape and classes ({err})"
        ) from err

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    # requests run one at a time on the event loop: a second pool only adds wake-ups
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own untyped errors for unreadable files
        raise ModelError(f"{model_path} is not a loadable ONNX model: {err}") from err

    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{model_path} must have one input and one output")
    model = Model(
        session=session,
        input_name=inputs[0].name,
        output_name=outputs[0].name,
        example_shape=example_shape,
        classes=classes,
        card=card,
    )
    if spec.get("name", model.input_name) != model.input_name:
        raise ModelError(
            f"{card_path} names input {spec['name']!r} but {model_path} has {model.input_name!r}"
        )
    try:
        probs = model.predict(np.zeros((1, *example_shape), dtype=np.float32))
    except Exception as err:  # an ORT shape error means card and model disagree
        raise ModelError(f"{model_path} rejects inputs of the card's shape {shape}: {err}") from err
    if probs.shape != (1, len(classes)):
        raise ModelError(
            f"{model_path} returns {probs.shape[1]} scores but {card_path} lists "
            f"{len(classes)} classes"
        )
    return model
