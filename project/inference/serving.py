"""``python -m project serve FOLDER``: an HTTP server that predicts images with an exported model, as ``predict`` does
(FastAPI on uvicorn: the ``serve`` extra; see docs/serving.md).

- ``GET /health``: ``{"status": "ok", ...}`` with what the model is (its task, classes, input size), the server's
  limits, and what it has served (requests, images, network calls, the largest batch);
- ``POST /predict``: image files or pixel arrays (:mod:`project.inference.serving_inputs` says exactly which), answered
  with ``{"predictions": [row, ...]}``, one row per input in their order, each with the columns of ``predict``'s CSV
  but its path: ``predicted`` and, for classification, ``p_<class>``;
- bad input: a 4xx answer ``{"error": "one line"}`` (400, 413, 415, 422); a body over ``max_bytes`` is refused by its
  Content-Length, or once the bytes read pass it.

Batching under load: each request's images join one queue, which a single worker empties into network calls of up to
``max_batch_size`` images, run in a thread; a call waits for more images (at most ``batch_timeout_ms``) only while
other requests are being read or decoded, so a lone request is never held back and concurrent ones share calls.
SIGTERM and Ctrl-C stop the server once the requests under way are answered (exit status 143 or 130).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import signal
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from torch import Tensor

from project.data.in_memory import normalised
from project.errors import ReportedError, UserInputError, first_line
from project.inference.prediction import Predictor, TextPredictor
from project.inference.serving_inputs import BadRequest, media_type, request_images

_STOPPING = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the server (once the requests under way are answered)."""


@dataclass(frozen=True)
class ServeSettings:
    """Where the server listens and its limits; each checked when made."""

    host: str = "127.0.0.1"
    port: int = 8000
    """0: any free port (the start-up line says which)."""
    max_batch_size: int = 32
    """The most images in one network call; 1 runs every image alone."""
    batch_timeout_ms: float = 5.0
    """How long a network call waits for more images while other requests are on their way."""
    max_bytes: int = 10_000_000
    """The largest request body taken (413 above)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"port: expected a port from 1 to 65535 (or 0: any free one), got {self.port}")
        for key in ("max_batch_size", "max_bytes"):
            if getattr(self, key) < 1:
                raise UserInputError(f"{key}: expected 1 or more, got {getattr(self, key)}")
        if not (math.isfinite(self.batch_timeout_ms) and self.batch_timeout_ms >= 0):
            raise UserInputError(f"batch_timeout_ms: expected 0 or more milliseconds, got {self.batch_timeout_ms}")


class _Batcher:
    """The queue of images from every request, and the one worker that runs them through the network in batches."""

    def __init__(self, predictor: Predictor, max_batch_size: int, timeout_s: float) -> None:
        self.predictor, self.max_batch_size, self.timeout_s = predictor, max_batch_size, timeout_s
        self.queue: asyncio.Queue[tuple[Tensor, asyncio.Future]] = asyncio.Queue()
        self.arriving = 0  # requests being read or decoded: their images are on their way
        self.changed = asyncio.Event()
        self.served = {"requests": 0, "images": 0, "network_calls": 0, "largest_batch": 0}
        # The network's own thread: a call never queues behind the decoding of requests in the default pool.
        self.network_thread = ThreadPoolExecutor(1, thread_name_prefix="network")

    @contextlib.contextmanager
    def arriving_request(self) -> Iterator[None]:
        """While a request is read and decoded, a waiting batch may wait for its images."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1
            self.changed.set()

    async def predict(self, images: list[Tensor]) -> list[dict[str, Any]]:
        """The rows of ``images``, once the worker has run them (with other requests' images, maybe)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures, strict=True):
            self.queue.put_nowait((image, future))
        self.changed.set()
        self.served["requests"] += 1
        return list(await asyncio.gather(*futures))

    async def work(self) -> None:
        """Forever: take the first image waiting, gather more (:meth:`_gathered`), run them together."""
        while True:
            batch = await self._gathered([await self.queue.get()])
            images = torch.stack([image for image, _ in batch])
            try:
                rows = await asyncio.get_running_loop().run_in_executor(self.network_thread, self._rows, images)
            except Exception as error:  # answered as a 500 to each request of the batch; the worker goes on
                rows = [error] * len(batch)
            self.served["images"] += len(batch)
            self.served["network_calls"] += 1
            self.served["largest_batch"] = max(self.served["largest_batch"], len(batch))
            for (_, future), row in zip(batch, rows, strict=True):
                if future.done():  # (a request whose client went away)
                    continue
                if isinstance(row, Exception):
                    future.set_exception(row)
                else:
                    future.set_result(row)

    async def _gathered(self, batch: list) -> list:
        """``batch`` with the images queued since, up to ``max_batch_size``; while other requests are on their way
        it waits for theirs, at most ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            while len(batch) < self.max_batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            left = deadline - loop.time()
            if len(batch) >= self.max_batch_size or self.arriving == 0 or left <= 0:
                return batch
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # (TimeoutError from Python 3.11)
                await asyncio.wait_for(self.changed.wait(), left)

    def _rows(self, images: Tensor) -> list[dict[str, Any]]:
        outputs = self.predictor.run(images)
        return self.predictor.task.prediction_rows(outputs, self.predictor.preprocessing["class_names"])


def _model_description(predictor: Predictor) -> dict[str, Any]:
    """What ``/health`` says of the model: its task, classes and the images it takes."""
    preprocessing = predictor.preprocessing
    return {
        "task": predictor.task.name,
        "classes": preprocessing["class_names"],
        "input": {"channels": preprocessing["channels"], "image_size": preprocessing["image_size"]},
    }


def create_app(predictor: Predictor, settings: ServeSettings, on_start: Callable[[], None] = lambda: None) -> FastAPI:
    """The server's application: ``/health`` and ``/predict`` for ``predictor``; ``on_start`` runs once it is ready."""
    batcher = _Batcher(predictor, settings.max_batch_size, settings.batch_timeout_ms / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = asyncio.create_task(batcher.work())
        on_start()
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        batcher.network_thread.shutdown()

    app = FastAPI(title="project prediction server", lifespan=lifespan)
    limits = {key: getattr(settings, key) for key in ("max_batch_size", "batch_timeout_ms", "max_bytes")}

    def decode(data: bytes) -> Tensor:
        return normalised(predictor.conversion.decode(data), predictor.mean, predictor.std)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **_model_description(predictor), "limits": limits, "served": dict(batcher.served)}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        media_type(content_type)  # a 415 before the body is read
        with batcher.arriving_request():
            body = await _body(request, settings.max_bytes)
            images = await asyncio.to_thread(request_images, body, content_type, decode)
        return JSONResponse({"predictions": await batcher.predict(images)})

    _answer_errors_in_one_line(app)
    return app


def _answer_errors_in_one_line(app: FastAPI) -> None:
    """Every refusal as ``{"error": "..."}``: bad input, a path or method that does not exist, a failure."""

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def failure(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"the prediction failed: {first_line(error)}"}, status_code=500)


async def _body(request: Request, max_bytes: int) -> bytes:
    """The request's body, refused (413) by its Content-Length or as soon as the bytes read pass ``max_bytes``."""
    declared = request.headers.get("content-length", "")
    too_large = f"this server takes bodies of at most {max_bytes:,} bytes (--max_bytes)"
    if declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"a body of {int(declared):,} bytes: {too_large}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"a body of more than {max_bytes:,} bytes: {too_large}")
        chunks.append(chunk)
    return b"".join(chunks)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or one line saying why it cannot be (before the model is loaded).

    Made with the protocol number TCP, as asyncio makes its own: asyncio turns Nagle's algorithm off only on the
    connections of such a socket (``_set_nodelay`` checks ``sock.proto``), and with it on, every answer but the first
    on a kept-alive connection waited 40 ms for the client's delayed acknowledgement (the same check leaves macOS's
    accepted sockets without it: https://github.com/python/cpython/issues/148783, hence the option on the listening
    socket too, which Linux passes on to the sockets it accepts)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise UserInputError(f"host: {host!r} is not a name or address of this machine") from None
    listening = socket.socket(family, kind, protocol or socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own: a restart finds it free
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listening.bind(address)
        listening.listen(2048)
    except OSError as error:
        listening.close()
        reasons = {
            errno.EADDRINUSE: f"port: {port} is in use on {host} (another server?): choose another --port, or stop it",
            errno.EACCES: f"port: {port} needs privileges here (ports below 1024): choose one from 1024 to 65535",
            errno.EADDRNOTAVAIL: f"host: {host} is not an address of this machine (127.0.0.1: this machine only; "
            f"0.0.0.0: every network)",
        }
        raise UserInputError(reasons.get(error.errno, f"cannot listen on {host}:{port}: {first_line(error)}")) from None
    return listening


def serve(model: Path, settings: ServeSettings) -> None:
    """Serve ``model`` (an export folder, or a ``.onnx`` or ``.ckpt`` file) until SIGTERM or Ctrl-C, which end the
    process with status 143 or 130 once the requests under way are answered. Bad settings, a model that cannot be
    loaded, a port in use: one :class:`UserInputError` before the server starts."""
    if not model.exists():
        raise UserInputError(f"{model}: no such folder or file (give an export folder: python -m project export CKPT)")
    listening = _listening_socket(settings.host, settings.port)
    try:
        predictor = Predictor.load(model)  # a model folder's model.onnx when it has one, else its network
        if isinstance(predictor, TextPredictor):
            raise UserInputError(f"{model} is a text model: serve predicts images; use python -m project predict")
        host, port = listening.getsockname()[:2]
        address = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        about, size = _model_description(predictor), predictor.preprocessing["image_size"]
        started = (
            f"serving {model} ({about['task']}, {len(about['classes'])} classes, {about['input']['channels']}x{size}x"
            f"{size} images) on {address}: POST {address}/predict, GET {address}/health; Ctrl-C stops it"
        )
        app = create_app(predictor, settings, lambda: print(started, flush=True))
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10)
        stopped_by = _run_until_stopped(uvicorn.Server(config), listening)
    finally:
        listening.close()
    if not stopped_by:
        raise ReportedError("the server stopped at start-up (see the lines above)")
    print(f"serve: stopped by {'Ctrl-C' if stopped_by == signal.SIGINT else 'SIGTERM'}", flush=True)
    raise SystemExit(128 + stopped_by)


def _run_until_stopped(server: uvicorn.Server, listening: socket.socket) -> int:
    """Run ``server`` until a signal stops it; the signal's number (0: none).

    uvicorn shuts down gracefully on SIGINT and SIGTERM, then raises the signal again for the handler it found
    (``Server.capture_signals``): here, one that notes it, so the command ends as the project's commands do."""
    caught: list[int] = []
    handlers = {number: signal.signal(number, lambda got, frame: caught.append(got)) for number in _STOPPING}
    try:
        server.run(sockets=[listening])
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    return caught[-1] if caught else 0
