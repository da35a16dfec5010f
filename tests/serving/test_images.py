"""An image model served (a card whose input is of kind `image`): image files as multipart
fields, a raw image body or base64 JSON, decoded with mlpipeline.imaging as ingest decodes them,
answered as ONNX Runtime answers on the pipeline's pixels; refusals name the file; in-process
(FastAPI TestClient) and as `python -m mlpipeline.serving` through the smoke check."""

from __future__ import annotations

import base64
import shutil
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import IMAGE_CLASSES, export_tiny_image_model, image_file, serving
from prometheus_client.parser import text_string_to_metric_families

from mlpipeline.ops import smoke as checks
from mlpipeline.serving.app import create_app
from mlpipeline.serving.settings import Settings

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; the pinned httpx works
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

MAX_BATCH = 8
MAX_BODY = 256 * 1024
MAX_PIXELS = 100_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_image_model(tmp_path_factory.mktemp("served-images"))


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_path=model_dir / "model.onnx",
        max_batch=MAX_BATCH,
        max_body_bytes=MAX_BODY,
        max_image_pixels=MAX_PIXELS,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def files_of(model_dir: Path) -> list[Path]:
    return sorted((model_dir / "files").iterdir())


def probabilities(answer: dict) -> np.ndarray:
    assert all(list(p) == IMAGE_CLASSES for p in answer["probabilities"])
    return np.asarray([[p[c] for c in IMAGE_CLASSES] for p in answer["probabilities"]])


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_multipart_files_are_answered_as_onnx_runtime_answers_the_pipelines_pixels(
    client: TestClient, model_dir: Path
) -> None:
    paths, reference = files_of(model_dir), np.load(model_dir / "reference.npy")
    for start in range(0, len(paths), MAX_BATCH):
        part = paths[start : start + MAX_BATCH]
        fields = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in part]
        answer = client.post("/predict", files=fields)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # the tables' answer shape, per file in the order sent
        assert set(body) == {"predictions", "probabilities", "model_version"}
        expected = reference[start : start + MAX_BATCH]
        assert np.abs(probabilities(body) - expected).max() <= 1e-5
        assert body["predictions"] == [IMAGE_CLASSES[i] for i in expected.argmax(1)]


def test_a_raw_image_body_and_base64_json_get_the_same_answers(
    client: TestClient, model_dir: Path
) -> None:
    paths, reference = files_of(model_dir), np.load(model_dir / "reference.npy")
    kinds = {".png": "image/png", ".jpg": "image/jpeg"}
    for path, expected in zip(paths, reference, strict=True):
        raw = client.post(
            "/predict", content=path.read_bytes(), headers={"content-type": kinds[path.suffix]}
        )
        assert raw.status_code == 200, raw.text
        assert np.abs(probabilities(raw.json())[0] - expected).max() <= 1e-5
    texts = [base64.b64encode(p.read_bytes()).decode() for p in paths[:3]]
    texts[1] = "data:image/png;base64," + texts[1]  # as a browser's FileReader gives it
    answer = client.post("/predict", json={"images": texts})
    assert answer.status_code == 200, answer.text
    assert np.abs(probabilities(answer.json()) - reference[:3]).max() <= 1e-5


def truncated_png() -> bytes:
    whole = image_file(0, (40, 30))
    return whole[: len(whole) // 2]


def png_header(width: int, height: int) -> bytes:
    """An 8-bit RGB PNG's signature and IHDR chunk saying that size, then 100 bytes of pixels:
    far fewer than the header promises, so only a check of the header can name its size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(100)))


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ([("file", ("cat.png", truncated_png()))], 422, "file 0 'cat.png': cannot decode"),
        ([("file", ("notes.txt", b"hi, no image"))], 422, "file 0 'notes.txt': not an image"),
        ([("file", ("empty.png", b""))], 422, "file 0 'empty.png' is empty"),
        # the second of two: named by its position too
        ([("file", ("a.png", image_file(1))), ("file", ("b", b"junk"))], 422, "file 1 'b': not"),
        # the pixel count from the header alone: these bytes hold no pixels to decode
        ([("file", ("big.png", png_header(2000, 2000)))], 422, "2000x2000 pixels is over the"),
        ([("file", ("bomb.png", png_header(100_000, 100_000)))], 422, "decompression bomb"),
        ([("file", ("big.png", image_file(2, (400, 300), "L")))], 422, "400x300 pixels"),
        ([("image", ("a.png", image_file(3)))], 422, "form field 'image' is not taken"),
        ([("file", ("a.png", image_file(4)))] * (MAX_BATCH + 1), 422, "over the limit of 8"),
    ],
    ids=[
        "truncated",
        "not-image",
        "empty",
        "second",
        "header",
        "bomb",
        "too-many-pixels",
        "field",
        "batch",
    ],
)
def test_a_bad_file_gets_422_naming_it_and_the_service_stays_up(
    client: TestClient, model_dir: Path, files: list, status: int, message: str
) -> None:
    answer = client.post("/predict", files=files)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert "\n" not in answer.json()["error"]
    good = files_of(model_dir)[0]
    assert client.post("/predict", files=[("file", good.read_bytes())]).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"{}", "text/plain", 415, "multipart/form-data or image/* or application/json"),
        (b"x" * (MAX_BODY + 1), "image/png", 413, "over the limit"),
        (b"--b\r\nno end", "multipart/form-data; boundary=b", 400, "multipart"),
        (b"--b--\r\n", "multipart/form-data", 400, "boundary"),
        (b"--b--\r\n", "multipart/form-data; boundary=b", 422, "no image"),
        # a part without a filename is named by its position alone
        (
            b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\njunk\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            422,
            "file 0: not an image",
        ),
        (b'{"images": []}', "application/json", 422, "no image"),
        (b'{"images": ["!!"]}', "application/json", 422, "images[0] is not valid base64"),
        (b'{"images": [3]}', "application/json", 422, "images[0] must be a base64 string"),
        (b'{"inputs": [[1]]}', "application/json", 422, '{"images": ["<base64>", ...]}'),
        (b"{", "application/json", 400, "malformed JSON"),
    ],
    ids=[
        "type",
        "size",
        "unended",
        "no-boundary",
        "no-part",
        "no-filename",
        "no-image",
        "base64",
        "number",
        "key",
        "json",
    ],
)
def test_a_bad_body_gets_a_4xx_that_says_what_is_wrong(
    client: TestClient, body: bytes, content_type: str, status: int, message: str
) -> None:
    answer = client.post("/predict", content=body, headers={"content-type": content_type})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_image_requests_are_counted_in_the_metrics_and_the_drift_counters(
    client: TestClient, model_dir: Path
) -> None:
    before_ok = metric(client, "http_requests_total", route="/predict", status="200")
    before_rows = metric(client, "predict_batch_size_sum")
    column = "channel_0_mean"

    def binned() -> float:
        families = text_string_to_metric_families(client.get("/metrics").text)
        return sum(
            s.value
            for f in families
            for s in f.samples
            if s.name == "model_input_bin_total" and s.labels["column"] == column
        )

    before_bins = binned()
    before_rejected = metric(client, "predict_rejected_total", reason="image")
    paths = files_of(model_dir)[:3]
    client.post("/predict", files=[("file", p.read_bytes()) for p in paths])
    client.post("/predict", files=[("file", b"junk")])
    assert metric(client, "http_requests_total", route="/predict", status="200") == before_ok + 1
    assert metric(client, "predict_batch_size_sum") == before_rows + 3
    assert binned() == before_bins + 3  # each image's channel statistics, from its uint8 pixels
    assert metric(client, "predict_rejected_total", reason="image") == before_rejected + 1


def test_openapi_describes_the_three_ways_to_send_images(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "image/*", "application/json"}
    assert "file" in content["multipart/form-data"]["schema"]["properties"]
    assert content["application/json"]["schema"]["required"] == ["images"]


def test_the_smoke_check_sends_the_files_to_a_running_service(
    model_dir: Path, tmp_path: Path
) -> None:
    """make smoke's check of an image model: the test split's files over HTTP, against the
    reference outputs, from `python -m mlpipeline.serving`."""
    shutil.copytree(model_dir, tmp_path / "models")
    files = files_of(model_dir)
    reference = np.load(model_dir / "reference.npy")
    with serving(tmp_path) as url:
        outputs, predicted = checks.predict_all(url, files, 5)
    assert checks.compare(outputs, predicted, reference, IMAGE_CLASSES) <= 1e-5
