"""The REST server's application: MLflow's own scoring app behind a guard that holds the budget.

``carsdepo serve`` starts uvicorn on ``create_app`` (one call per worker process). The app is
MLflow's (``mlflow.pyfunc.scoring_server.init``: ``/ping``, ``/health``, ``/version``,
``/invocations`` and its payload formats, unchanged); ``RequestGuard`` answers before it for what
MLflow would take in whole or answer with a 500:

- a body over ``max_body_bytes``: 413, read no further than the limit;
- no ``Content-Type`` header: 415 (MLflow fails on it with an AttributeError);
- JSON nested deeper than Python's parser recurses: 400 (MLflow's parser raises
  RecursionError).

It also starts the request's clock (``prediction.deadline``): the model stops between images
once the timeout has passed and answers 504 itself, so nothing is recorded for rows nobody
receives. MLflow's own timeout (which only stops waiting) is set a little later, as a backstop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from carsdepo_assets.prediction.deadline import set_deadline
from carsdepo_assets.prediction.limits import ServingLimits
from carsdepo_assets.prediction.runtime import prepare_inference_process

MODEL_URI_ENV = "CARSDEPO_SERVED_MODEL_URI"
THREADS_ENV = "CARSDEPO_SERVER_TORCH_THREADS"  # per worker process: the cores split between them
# Brackets before a body is parsed once more to look for nesting too deep for the parser; any
# ordinary request (rows of strings) has a few.
BRACKETS_BEFORE_DEPTH_CHECK = 200

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestGuard:
    """ASGI middleware in front of MLflow's scoring app for ``POST /invocations`` (see the
    module docstring); every other request passes through untouched."""

    def __init__(self, app: App, limits: ServingLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"].rstrip("/") != "/invocations"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not headers.get(b"content-type", b"").strip():
            await _refuse(send, 415, "BAD_REQUEST", "no Content-Type header: send the body as "
                          "application/json (or text/csv, application/vnd.apache.parquet)")
            return
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            await self._too_big(send, f"the body declares {int(declared):,} bytes")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.limits.max_body_bytes:
                await self._too_big(send, f"the body is more than {len(body):,} bytes")
                return
            if not message.get("more_body", False):
                break
        problem = nesting_problem(bytes(body), headers[b"content-type"])
        if problem:
            await _refuse(send, 400, "BAD_REQUEST", problem)
            return
        set_deadline(self.limits.timeout_s)  # inherited by the thread MLflow predicts in
        await self.app(scope, _replay(bytes(body)), send)

    async def _too_big(self, send: Send, found: str) -> None:
        refused = self.limits.refusal("max_body_bytes", found, status=413)
        await _refuse(send, refused.status, "REQUEST_LIMIT_EXCEEDED", str(refused))


def nesting_problem(body: bytes, content_type: bytes) -> str | None:
    """Why a JSON body cannot be parsed for its nesting, or None. Only a body with many
    brackets is parsed here (once more than MLflow does)."""
    if not content_type.split(b";")[0].strip().lower().endswith(b"json"):
        return None
    if body.count(b"[") + body.count(b"{") < BRACKETS_BEFORE_DEPTH_CHECK:
        return None
    try:
        json.loads(body)
    except RecursionError:
        return ("JSON nested too deeply to parse: a request is an object with "
                "'dataframe_records', 'dataframe_split', 'instances' or 'inputs'")
    except ValueError:  # not JSON at all: MLflow's own parser says what is wrong
        return None
    return None


def create_app() -> App:
    """The application of one worker process: the model ``carsdepo serve`` chose, loaded
    once, behind the guard (uvicorn ``--factory``)."""
    threads = os.environ.get(THREADS_ENV, "").strip()
    prepare_inference_process(int(threads) if threads.isdigit() else None)
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_URI_ENV])
    return RequestGuard(scoring_server.init(model),
                        ServingLimits.from_environment() or ServingLimits())


async def _refuse(send: Send, status: int, error_code: str, message: str) -> None:
    """An answer in MLflow's error format (``error_code``, ``message``)."""
    body = json.dumps({"error_code": error_code, "message": message}).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes) -> Receive:
    """A ``receive`` that hands the app the body already read, then waits for a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
