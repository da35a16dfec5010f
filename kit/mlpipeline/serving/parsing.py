"""Request bodies: read within a size limit, parsed into the model's inputs (a float32 batch
for a tensor model, one vector per column for a table model, a uint8 batch of decoded image
files for an image model), or refused with a status and a one-line message saying what is
wrong."""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from mlpipeline.imaging import ImageError, ImageShape, decode

FILE_FIELD = "file"  # the multipart field name of each image
IMAGES_KEY = "images"  # the JSON body's list of base64 images


class ClientError(Exception):
    """A request the service cannot use: answered with `status` and a one-line message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def parse_inputs(body: bytes, example_shape: tuple[int, ...], max_batch: int) -> np.ndarray:
    """Turn a request body into a float32 batch of shape (n, *example_shape), or raise
    ClientError saying what is wrong with it."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise _json_error(body, err) from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ClientError(422, "schema", 'body must be a JSON object {"inputs": [example, ...]}')
    if extra := sorted(set(payload) - {"inputs"}):
        raise ClientError(422, "schema", f'unknown keys {extra}: send only {{"inputs": [...]}}')
    inputs = payload["inputs"]
    expected = list(example_shape)
    if not isinstance(inputs, list):
        raise ClientError(422, "schema", f"inputs must be a list of examples of shape {expected}")
    if not inputs:
        raise ClientError(422, "empty", "inputs is empty: send at least one example")
    if len(inputs) > max_batch:
        raise ClientError(
            422, "batch", f"batch of {len(inputs)} examples is over the limit of {max_batch}"
        )
    try:
        array = np.asarray(inputs)
    except ValueError:  # numpy's message for ragged nesting is long and about numpy
        raise ClientError(
            422,
            "shape",
            f"inputs are ragged or nested too deeply: every example must have shape {expected}",
        ) from None
    if array.dtype.kind not in "iuf" or (
        (b"true" in body or b"false" in body) and _has_bool(inputs)
    ):
        # numpy would quietly turn "1.5" into 1.5 and true into 1: refuse instead
        raise ClientError(422, "type", _type_message(array.dtype.kind))
    if array.shape[1:] != example_shape:
        count = int(np.prod(example_shape))
        raise ClientError(
            422,
            "shape",
            f"each example must have shape {expected} ({count} numbers); "
            f"got inputs of shape {list(array.shape)}",
        )
    with np.errstate(over="ignore"):  # overflow to inf is caught just below
        x = array.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ClientError(
            422, "value", "inputs must be finite: values beyond float32 range are refused"
        )
    return x


RECORD_TYPES = {
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "integer": "an integer",
}


def category_text(value: Any, column_type: str) -> str | None:
    """A categorical value as the string the model takes, or None if it is not of the
    column's type. The features stage's rule (mlpipeline.data.features.category_text, which
    tests/serving/test_records.py holds this to): booleans as true/false, integers in digits,
    missing as the empty string."""
    if value is None:
        return ""
    if column_type == "string":
        return value if isinstance(value, str) else None
    if column_type == "boolean":
        return ("true" if value else "false") if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else None


def parse_records(
    body: bytes, columns: Sequence[Any], max_batch: int, ignored: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Turn `{"records": [{column: value, ...}, ...]}` into the table model's inputs, one
    vector per column (missing keys and nulls are missing values), or raise ClientError naming
    the record and column that is wrong. `columns` have name, kind and type; keys named in
    `ignored` (the training file's columns the model does not take) are accepted and unused."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise _json_error(body, err) from None
    names = [c.name for c in columns]
    if not isinstance(payload, dict) or "records" not in payload:
        raise ClientError(
            422, "schema", 'body must be a JSON object {"records": [{"column": value, ...}, ...]}'
        )
    if extra := sorted(set(payload) - {"records"}):
        raise ClientError(422, "schema", f'unknown keys {extra}: send only {{"records": [...]}}')
    records = payload["records"]
    if not isinstance(records, list):
        raise ClientError(422, "schema", "records must be a list of objects, one per row")
    if not records:
        raise ClientError(422, "empty", "records is empty: send at least one record")
    if len(records) > max_batch:
        raise ClientError(
            422, "batch", f"batch of {len(records)} records is over the limit of {max_batch}"
        )
    known = {*names, *ignored}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ClientError(422, "schema", f"record {i} is not an object of column: value")
        if unknown := [k for k in record if k not in known]:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ClientError(
                422,
                "column",
                f"record {i}: unknown column '{unknown[0]}'; {hint}the model takes "
                f"{', '.join(names)}",
            )
    feeds = {}
    for column in columns:
        values = [r.get(column.name) for r in records]
        if column.kind == "numeric":
            feeds[column.name] = _numbers(values, column.name)
        else:
            texts = [category_text(v, column.type) for v in values]
            if None in texts:
                i = texts.index(None)
                raise ClientError(422, "type", _wrong_type(i, column, values[i]))
            feeds[column.name] = np.array(texts, dtype=object)
    return feeds


def _numbers(values: list[Any], name: str) -> np.ndarray:
    """A numeric column: numbers, null for missing; anything else names the record."""
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ClientError(
                422, "type", f"record {i}: column '{name}' takes a number or null, got {_show(v)}"
            )
    with np.errstate(over="ignore"):  # beyond float32's range: refused just below
        array = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
    if np.isinf(array).any():
        i = int(np.isinf(array).argmax())
        raise ClientError(
            422, "value", f"record {i}: column '{name}' value {values[i]} is beyond float32 range"
        )
    return array


def _wrong_type(i: int, column: Any, value: Any) -> str:
    return (
        f"record {i}: column '{column.name}' takes {RECORD_TYPES[column.type]} or null, "
        f"got {_show(value)}"
    )


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _json_error(body: bytes, err: orjson.JSONDecodeError) -> ClientError:
    """Name NaN and Infinity plainly (orjson only says 'unexpected character')."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    if looks := _not_utf8(body):
        return ClientError(400, "encoding", f"{looks}; JSON must be UTF-8")
    if "infinity" in str(err):  # a literal such as 1e999 overflows a double
        return ClientError(422, "value", f"inputs must be finite numbers: {err}")
    if b"NaN" in body or b"Infinity" in body:
        try:
            json.loads(body, parse_constant=refuse)
        except ValueError as std_err:
            if str(std_err) in ("NaN", "Infinity", "-Infinity"):
                return ClientError(
                    422, "value", f"inputs must be finite numbers: {std_err} is not allowed"
                )
        except RecursionError:  # nesting deeper than orjson allows: its message says so
            pass
    return ClientError(400, "json", f"malformed JSON: {err}")


# the first bytes of bodies that are not UTF-8: byte order marks (UTF-32's first, as they
# begin like UTF-16's) and the magic numbers of compressed formats
BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


def _not_utf8(body: bytes) -> str | None:
    """What a body that orjson refused looks like when it is not UTF-8 at all (orjson only
    says 'str is not valid UTF-8'), judged by its first bytes; None if it looks like neither."""
    for start, name in BYTE_ORDER_MARKS:
        if body.startswith(start):
            return f"body looks {name}-encoded (it starts with a {name} byte order mark)"
    for start, name in COMPRESSED:
        if body.startswith(start):
            return (
                f"body looks {name}-compressed (it starts with {name}'s magic bytes): send it "
                "uncompressed"
            )
    if b"\x00" in body[:4]:  # UTF-16 or UTF-32 without a byte order mark
        return "body looks UTF-16- or UTF-32-encoded (it has NUL bytes)"
    return None


def _has_bool(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


def _type_message(kind: str) -> str:
    found = {"U": "strings", "b": "true/false", "O": "null, objects or oversized integers"}
    return f"inputs must be numbers; found {found.get(kind, 'true/false')}"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes
    (from Content-Length when given, else while streaming), so it is never held whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ClientError(400, "length", f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise ClientError(
                413, "size", f"body of {declared} bytes is over the limit of {limit} bytes"
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, "size", f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def accepts(media_type: str, accepted: Sequence[str]) -> bool:
    """Whether `media_type` (lower case, without parameters) is one of `accepted`, in which
    `type/*` stands for any subtype of `type`."""
    return any(
        media_type == a
        or (a.endswith("/*") and media_type.startswith(a[:-1]) and a[:-1] != media_type)
        for a in accepted
    )


def image_files(body: bytes, content_type: str, max_batch: int) -> list[tuple[str, bytes]]:
    """The image files in a request body, as (how an error names it, its bytes): multipart
    form fields named `file`, a raw `image/*` body, or JSON `{"images": [base64, ...]}`;
    ClientError when the body is malformed, empty or holds more than `max_batch` files."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        files = _form_files(body, content_type)
    elif media_type.startswith("image/"):
        files = [("the body", body)]
    else:
        files = _base64_files(body)
    if not files:
        raise ClientError(422, "empty", "no image in the request: send at least one file")
    if len(files) > max_batch:
        raise ClientError(
            422, "batch", f"batch of {len(files)} images is over the limit of {max_batch}"
        )
    return files


def parse_images(files: Sequence[tuple[str, bytes]], shape: ImageShape) -> np.ndarray:
    """The files decoded and resized as ingest does (mlpipeline.imaging.decode), as one uint8
    batch (n, C, H, W); ClientError naming the first file that is empty, corrupt, not an
    image or over the pixel limit (read from its header, before decoding)."""
    batch = np.empty((len(files), *shape.array_shape), np.uint8)
    for i, (name, data) in enumerate(files):
        if not data:
            raise ClientError(422, "image", f"{name} is empty")
        try:
            batch[i] = decode(data, shape)
        except ImageError as err:
            raise ClientError(422, "image", f"{name}: {err}") from None
    return batch


def _form_files(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The multipart body's parts, each of which must be a field named `file`; an error
    names a file by its position and, when it has one, its form filename."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ClientError(400, "multipart", "multipart/form-data needs a boundary parameter")
    parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
    field, value = bytearray(), bytearray()
    ended = False

    def header_end() -> None:
        parts[-1][0][bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def end() -> None:
        nonlocal ended
        ended = True

    callbacks: Any = {
        "on_part_begin": lambda: parts.append(({}, [])),
        "on_header_field": lambda data, start, stop: field.extend(data[start:stop]),
        "on_header_value": lambda data, start, stop: value.extend(data[start:stop]),
        "on_header_end": header_end,
        "on_part_data": lambda data, start, stop: parts[-1][1].append(data[start:stop]),
        "on_end": end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as err:
        raise ClientError(400, "multipart", f"malformed multipart body: {err}") from None
    if not ended:
        raise ClientError(400, "multipart", "multipart body ends before its closing boundary")
    files = []
    for i, (headers, chunks) in enumerate(parts):
        _, disposition = parse_options_header(headers.get(b"content-disposition"))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name != FILE_FIELD:
            raise ClientError(
                422,
                "schema",
                f"form field {_label(name)} is not taken: send each image as a field named "
                f"{FILE_FIELD!r}",
            )
        filename = disposition.get(b"filename")
        label = f"file {i}" + (
            f" {_label(filename.decode('utf-8', 'replace'))}" if filename else ""
        )
        files.append((label, b"".join(chunks)))
    return files


def _base64_files(body: bytes) -> list[tuple[str, bytes]]:
    """`{"images": ["<base64>", ...]}`'s files (a data: URL's prefix is dropped); an error
    names an image by its index."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise _json_error(body, err) from None
    shape = f'body must be a JSON object {{"{IMAGES_KEY}": ["<base64>", ...]}}'
    if not isinstance(payload, dict) or not isinstance(payload.get(IMAGES_KEY), list):
        raise ClientError(422, "schema", shape)
    if extra := sorted(set(payload) - {IMAGES_KEY}):
        raise ClientError(422, "schema", f"unknown keys {extra}: {shape}")
    files = []
    for i, text in enumerate(payload[IMAGES_KEY]):
        name = f"{IMAGES_KEY}[{i}]"
        if not isinstance(text, str):
            raise ClientError(422, "type", f"{name} must be a base64 string, got {_show(text)}")
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            files.append((name, base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError) as err:
            raise ClientError(422, "image", f"{name} is not valid base64: {err}") from None
    return files


def _label(name: str) -> str:
    """A client's name for a file or field, quoted on one line and shortened."""
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."
