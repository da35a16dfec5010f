"""The served model: an ONNX Runtime session and the model card that describes it.

Three kinds of input, by the card's `input.kind`, each one class here that parses a request
body and describes it: `tensor` (one float32 input of a fixed example shape, as the digits'),
`records` (tables: one input per raw column, the preprocessing inside the model) and `image`
(image files, decoded and resized as ingest did into the uint8 batch the model takes). The app
calls their methods and never tests which kind it serves; every kind gets the same answer.
The output is class probabilities (`task: classification`) or one value per row (`regression`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlpipeline.imaging import IMAGE_SUFFIXES, ImageShape
from mlpipeline.serving.parsing import image_files, parse_images, parse_inputs, parse_records
from mlpipeline.serving.settings import Settings

JSON = ("application/json",)


class ModelError(Exception):
    """The model or its card is missing or inconsistent: the service cannot start."""


class TensorInput(BaseModel):
    """An image model's input: `{"inputs": [example, ...]}`, a float32 batch."""

    kind: Literal["tensor"]
    name: str
    shape: list[int | None] = Field(min_length=2)
    media_types: ClassVar[tuple[str, ...]] = JSON

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one example, without the batch axis."""
        return tuple(int(d or 0) for d in self.shape[1:])

    def names(self) -> list[str]:
        """The ONNX model's input names."""
        return [self.name]

    def parse(self, body: bytes, content_type: str, settings: Settings) -> dict[str, np.ndarray]:
        """The model's inputs from a request body; ClientError when it is wrong."""
        return {self.name: parse_inputs(body, self.example_shape, settings.max_batch)}

    def empty_feeds(self) -> dict[str, np.ndarray]:
        """One example of zeros, for the warm-up."""
        return {self.name: np.zeros((1, *self.example_shape), np.float32)}

    def body_schema(self) -> dict[str, Any]:
        """The JSON schema of a request body."""
        example: Any = {"type": "number"}
        for size in reversed(self.example_shape):
            example = {"type": "array", "items": example, "minItems": size, "maxItems": size}
        return {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {"inputs": {"type": "array", "items": example, "minItems": 1}},
        }

    def request_content(self) -> dict[str, Any]:
        """OpenAPI's `content` of a request body."""
        return {"application/json": {"schema": self.body_schema()}}


class Column(BaseModel):
    name: str
    kind: Literal["numeric", "categorical"]
    type: Literal["number", "string", "boolean", "integer"]


class RecordsInput(BaseModel):
    """A table model's input: `{"records": [{column: value, ...}, ...]}`, a vector per column."""

    kind: Literal["records"]
    columns: list[Column] = Field(min_length=1)
    # the training file's other columns (the label, columns dropped): a record may hold them
    ignored_columns: list[str] = Field(default_factory=list)
    media_types: ClassVar[tuple[str, ...]] = JSON
    example_shape: ClassVar[tuple[int, ...]] = ()  # one input per column, no example shape

    def names(self) -> list[str]:
        """The ONNX model's input names: the columns'."""
        return [c.name for c in self.columns]

    def parse(self, body: bytes, content_type: str, settings: Settings) -> dict[str, np.ndarray]:
        """The model's inputs from a request body; ClientError when it is wrong."""
        return parse_records(body, self.columns, settings.max_batch, self.ignored_columns)

    def empty_feeds(self) -> dict[str, np.ndarray]:
        """One row of missing values, for the warm-up."""
        return {
            c.name: np.full(1, np.nan, np.float32)
            if c.kind == "numeric"
            else np.array([""], dtype=object)
            for c in self.columns
        }

    def body_schema(self) -> dict[str, Any]:
        """The JSON schema of a request body."""
        ignored = {"description": "a column the model does not take: accepted and ignored"}
        record = {
            "type": "object",
            "additionalProperties": False,
            "properties": {c.name: {"type": [c.type, "null"]} for c in self.columns}
            | {name: ignored for name in self.ignored_columns},
        }
        return {
            "type": "object",
            "required": ["records"],
            "additionalProperties": False,
            "properties": {"records": {"type": "array", "items": record, "minItems": 1}},
        }

    def request_content(self) -> dict[str, Any]:
        """OpenAPI's `content` of a request body."""
        return {"application/json": {"schema": self.body_schema()}}


class ImageSettings(BaseModel):
    """How ingest turned each file into pixels: the card's `input.image`."""

    channels: Literal[1, 3]
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    resize: Literal["crop", "stretch"] = "crop"
    formats: list[str] = Field(default_factory=lambda: list(IMAGE_SUFFIXES))


class ImageInput(BaseModel):
    """An image model's input: image files (multipart fields named `file`, a raw `image/*`
    body, or `{"images": [base64, ...]}`), each decoded and resized by `mlpipeline.imaging`
    as ingest did, into one uint8 batch (n, C, H, W)."""

    kind: Literal["image"]
    name: str
    dtype: Literal["uint8"] = "uint8"
    shape: list[int | None] = Field(min_length=4, max_length=4)
    image: ImageSettings
    media_types: ClassVar[tuple[str, ...]] = ("multipart/form-data", "image/*", *JSON)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one image, without the batch axis: (C, H, W)."""
        return (self.image.channels, self.image.height, self.image.width)

    def names(self) -> list[str]:
        """The ONNX model's input names."""
        return [self.name]

    def parse(self, body: bytes, content_type: str, settings: Settings) -> dict[str, np.ndarray]:
        """The model's inputs from a request body; ClientError when it is wrong, naming the
        file that cannot be used."""
        files = image_files(body, content_type, settings.max_batch)
        shape = ImageShape(
            self.image.channels,
            self.image.height,
            self.image.width,
            self.image.resize,
            settings.max_image_pixels,
        )
        return {self.name: parse_images(files, shape)}

    def empty_feeds(self) -> dict[str, np.ndarray]:
        """One black image, for the warm-up."""
        return {self.name: np.zeros((1, *self.example_shape), np.uint8)}

    def body_schema(self) -> dict[str, Any]:
        """The JSON form of a request body (multipart and raw bodies: see _request_schema)."""
        return {
            "type": "object",
            "required": ["images"],
            "additionalProperties": False,
            "properties": {
                "images": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "contentEncoding": "base64",
                        "description": "an image file's bytes in base64 (a data: URL's prefix "
                        f"is accepted); formats {', '.join(self.image.formats)}",
                    },
                    "minItems": 1,
                }
            },
        }

    def request_content(self) -> dict[str, Any]:
        """OpenAPI's `content` of a request body: each media type it accepts."""
        files = {"type": "string", "format": "binary"}
        form = {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "array", "items": files, "description": "one field per image"}
            },
        }
        return {
            "multipart/form-data": {"schema": form},
            "image/*": {"schema": files},
            "application/json": {"schema": self.body_schema()},
        }


class Card(BaseModel):
    """The fields of the model card (written by the export stage) that the service reads."""

    model_config = ConfigDict(extra="allow")

    version: str = "unknown"
    task: Literal["classification", "regression"] = "classification"
    input: Annotated[TensorInput | RecordsInput | ImageInput, Field(discriminator="kind")]
    classes: list[str] | None = None

    @field_validator("classes", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return [str(c) for c in value] if isinstance(value, list) else value


@dataclass(frozen=True)
class Model:
    """A loaded ONNX session and what its card says about it."""

    session: ort.InferenceSession
    output_name: str
    card: Card
    card_json: dict[str, Any]  # the card as written, for /metadata

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def records(self) -> bool:
        """True for a table model, which takes named columns."""
        return isinstance(self.card.input, RecordsInput)

    @property
    def regression(self) -> bool:
        return self.card.task == "regression"

    @property
    def classes(self) -> list[str]:
        return self.card.classes or []

    @property
    def columns(self) -> list[Column]:
        """A table model's input columns."""
        return self.card.input.columns if isinstance(self.card.input, RecordsInput) else []

    @property
    def example_shape(self) -> tuple[int, ...]:
        """A tensor or image model's example shape, without the batch axis (a table's: ())."""
        return self.card.input.example_shape

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The model's output for a batch: probabilities (n, classes) or values (n,)."""
        return self.session.run([self.output_name], feeds)[0]

    def empty_feeds(self) -> dict[str, np.ndarray]:
        """One row of zeros (tensor) or of missing values (records), for the warm-up."""
        return self.card.input.empty_feeds()


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
        card_json = json.loads(card_path.read_text(encoding="utf-8"))
        card = Card.model_validate(card_json)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        first = err.errors()[0] if isinstance(err, ValidationError) else None
        where = ".".join(str(p) for p in first["loc"]) + ": " + first["msg"] if first else err
        raise ModelError(f"{card_path} is not a model card ({where})") from None
    if card.task == "classification" and not card.classes:
        raise ModelError(f"{card_path} is a classification's card without its classes")

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    # requests run one at a time on the event loop: a second pool only adds wake-ups
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own untyped errors for unreadable files
        raise ModelError(f"{model_path} is not a loadable ONNX model: {err}") from err

    inputs, outputs = [i.name for i in session.get_inputs()], session.get_outputs()
    if len(outputs) != 1:
        raise ModelError(f"{model_path} must have one output")
    model = Model(session, outputs[0].name, card, card_json)
    expected = card.input.names()
    if sorted(inputs) != sorted(expected):
        raise ModelError(f"{card_path} names inputs {expected} but {model_path} has {inputs}")
    try:
        out = model.predict(model.empty_feeds())
    except Exception as err:  # an ORT shape or type error means card and model disagree
        raise ModelError(f"{model_path} rejects inputs as its card describes them: {err}") from err
    want = (1,) if model.regression else (1, len(model.classes))
    if out.shape != want:
        raise ModelError(
            f"{model_path} returns outputs of shape {list(out.shape)} but {card_path} implies "
            f"{list(want)} ({card.task}, {len(model.classes)} classes)"
        )
    return model
