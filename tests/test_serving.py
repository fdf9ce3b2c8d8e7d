"""The prediction server (``python -m project serve FOLDER``) as a user meets it: a real server process, real image
files posted over HTTP, answers equal to ``predict``'s CSV, pixel arrays answered as the files that hold them, every
bad input a 4xx of one JSON line, concurrent requests sharing network calls, SIGTERM a clean stop, and a bad command
line one ``error:`` line before anything starts."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import REPO_ROOT, write_test_images
from helpers import cli_error
from PIL import Image

from project.inference.prediction_files import predict_files
from project.inference.serving_inputs import MAX_PIXELS, png_bytes

MAX_BYTES = 300_000
"""The module's server's ``--max_bytes``: a body over it is easy to make."""
STARTUP_SECONDS = 240  # imports and the model's load, on a busy CPU


@dataclass
class Server:
    """A ``python -m project serve`` process, its address and what it has printed."""

    process: subprocess.Popen
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 120) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def start_server(model: Path, *options: str) -> Server:
    """``python -m project serve MODEL --port 0 OPTIONS`` in its own process; returns once it listens (the start-up
    line names the port)."""
    command = [sys.executable, "-m", "project", "serve", str(model), "--port", "0", *options]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    server = Server(process)
    threading.Thread(target=lambda: server.lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.url:
        found = re.search(r" on (http://127\.0\.0\.1:\d+): POST", "".join(server.lines))
        server.url = found.group(1) if found else ""
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"the server did not start: {''.join(server.lines)[-3000:]}")
        time.sleep(0.1)
    return server


@pytest.fixture(scope="module")
def server(exported_folder: Path):
    """One server of the exported model for the module, its batches waiting up to 500 ms for more requests."""
    running = start_server(exported_folder, "--max_bytes", str(MAX_BYTES), "--batch_timeout_ms", "500")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def digits(fake_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six MNIST-format digits as PNG files, an RGB picture of another size and a JPEG: what users post."""
    folder = tmp_path_factory.mktemp("digits")
    paths = write_test_images(fake_data_dir, folder, 6)
    pixels = np.array(Image.open(paths[0]).convert("RGB").resize((40, 40)))
    Image.fromarray(pixels).save(folder / "colour.png")
    Image.open(paths[1]).save(folder / "photo.jpg", quality=90)
    return [*paths, folder / "colour.png", folder / "photo.jpg"]


def post_files(url: str, paths: list[Path]) -> httpx.Response:
    files = [("files", (path.name, path.read_bytes(), "application/octet-stream")) for path in paths]
    return httpx.post(f"{url}/predict", files=files, timeout=120)


def post_arrays(url: str, arrays: list[np.ndarray]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"inputs": [array.tolist() for array in arrays]}, timeout=120)


def served(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/health", timeout=60).json()["served"]


def assert_same_rows(got: list[dict], expected: list[dict], tolerance: float = 1e-5) -> None:
    """The same decisions, and probabilities within ``tolerance`` (a batch of another size may round otherwise)."""
    assert [row["predicted"] for row in got] == [row["predicted"] for row in expected]
    for got_row, expected_row in zip(got, expected, strict=True):
        assert list(got_row) == list(expected_row)
        for key in got_row.keys() - {"predicted"}:
            assert float(got_row[key]) == pytest.approx(float(expected_row[key]), abs=tolerance), key


def test_the_server_says_where_it_listens_and_what_it_serves(server, exported_folder):
    assert f"serving {exported_folder} (multiclass, 10 classes, 1x28x28 images) on {server.url}" in "".join(
        server.lines
    )
    health = httpx.get(f"{server.url}/health", timeout=60).json()
    assert health["status"] == "ok" and health["task"] == "multiclass"
    assert health["classes"] == [str(digit) for digit in range(10)]
    assert health["input"] == {"channels": 1, "image_size": 28}
    assert health["limits"] == {"max_batch_size": 32, "batch_timeout_ms": 500.0, "max_bytes": MAX_BYTES}


def test_posted_image_files_are_answered_as_predict_writes_them(server, exported_folder, digits, tmp_path):
    predict_files(exported_folder / "model.onnx", [str(path) for path in digits], tmp_path / "predictions.csv")
    with open(tmp_path / "predictions.csv", newline="") as handle:
        expected = [{key: value for key, value in row.items() if key != "path"} for row in csv.DictReader(handle)]
    together = post_files(server.url, digits)
    assert together.status_code == 200, together.text
    assert_same_rows(together.json()["predictions"], expected)
    alone = [post_files(server.url, [path]).json()["predictions"][0] for path in digits]
    assert_same_rows(alone, expected)
    assert len({row["predicted"] for row in expected}) >= 3  # the control: the images have answers of their own


def test_pixel_arrays_are_answered_as_the_files_that_hold_them(server, digits):
    greys = [np.array(Image.open(path)) for path in digits[:6]]
    colour = np.array(Image.open(digits[6]))
    arrays = [*greys, greys[0][None], greys[1][:, :, None], colour, colour.transpose(2, 0, 1)]
    answer = post_arrays(server.url, arrays)
    assert answer.status_code == 200, answer.text
    from_files = post_files(server.url, [*digits[:6], digits[0], digits[1], digits[6], digits[6]]).json()
    assert_same_rows(answer.json()["predictions"], from_files["predictions"], tolerance=1e-6)


def declaring(width: int, height: int) -> bytes:
    """A PNG file whose header declares ``width`` x ``height`` pixels (and whose pixel data is a single one)."""
    data = bytearray(png_bytes(np.zeros((1, 1), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height, then its CRC
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


BAD_INPUTS = {
    "garbage bytes as an image": (
        {"files": [("files", ("x.png", b"\x89PNG not really", "image/png"))]},
        422,
        "x.png: not an image that can be decoded",
    ),
    "a form field other than files": (
        {"files": [("image", ("x.png", b"abc", "image/png"))]},
        422,
        "a form field 'image': send images in the field 'files'",
    ),
    "JSON that does not parse": (
        {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}},
        400,
        "the body is not JSON",
    ),
    "JSON without inputs": ({"json": {"images": [[0]]}}, 422, 'a JSON body is {"inputs": [array, ...]}'),
    "no inputs": ({"json": {"inputs": []}}, 422, 'a JSON body is {"inputs": [array, ...]}'),
    "a ragged array": ({"json": {"inputs": [[[0, 1], [2]]]}}, 422, "inputs[0]: not a rectangular array"),
    "an array of four dimensions": ({"json": {"inputs": [[[[[0]]]]]}}, 422, "an array of shape [1, 1, 1, 1]"),
    "five channels": ({"json": {"inputs": [np.zeros((5, 4, 5)).tolist()]}}, 422, "an image is HxW, HxWxC or CxHxW"),
    "pixels over 255": ({"json": {"inputs": [[[0, 256]]]}}, 422, "pixels are whole numbers from 0 to 255"),
    "normalised pixels": ({"json": {"inputs": [[[0.5, -0.4]]]}}, 422, "pixels are whole numbers from 0 to 255"),
    "text for pixels": ({"json": {"inputs": [[["a", "b"]]]}}, 422, "inputs[0]: an array of str"),
    "another content type": (
        {"content": b"x", "headers": {"content-type": "text/plain"}},
        415,
        "Content-Type text/plain: send image files as multipart/form-data",
    ),
    "no content type": ({"content": b"x"}, 415, "no Content-Type: send image files"),
    "a body over max_bytes": (
        {"files": [("files", ("big.png", bytes(MAX_BYTES), "image/png"))]},
        413,
        f"bytes: this server takes bodies of at most {MAX_BYTES:,} bytes (--max_bytes)",
    ),
    "a chunked body over max_bytes": (
        {"content": iter([bytes(100_000)] * 4), "headers": {"content-type": "application/json"}},
        413,
        f"a body of more than {MAX_BYTES:,} bytes",
    ),
    "an image of too many pixels": (
        {"files": [("files", ("huge.png", declaring(MAX_PIXELS + 1, 1), "image/png"))]},
        413,
        f"huge.png: an image of {MAX_PIXELS + 1}x1 pixels; this server takes at most {MAX_PIXELS:,}",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_4xx_with_one_line_of_json(server, case):
    request, status, message = BAD_INPUTS[case]
    answer = httpx.post(f"{server.url}/predict", timeout=60, **request)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"] and "\n" not in answer.json()["error"]
    assert message in answer.json()["error"]


def test_answers_on_a_kept_alive_connection_do_not_wait_for_the_clients_acknowledgement(server):
    with httpx.Client(timeout=60) as client:  # one connection, kept alive
        seconds = []
        for _ in range(21):
            start = time.perf_counter()
            client.get(f"{server.url}/health").raise_for_status()
            seconds.append(time.perf_counter() - start)
    assert sorted(seconds)[10] < 0.035  # with Nagle's algorithm on, each but the first took 40 ms or more


def test_a_path_or_method_that_does_not_exist_is_one_line_of_json_too(server):
    assert httpx.get(f"{server.url}/nowhere", timeout=60).json() == {"error": "Not Found"}
    assert httpx.get(f"{server.url}/predict", timeout=60).status_code == 405


def test_concurrent_requests_share_network_calls_and_a_lone_one_runs_at_once(server, digits):
    before = served(server.url)
    alone = [post_files(server.url, [path]).json()["predictions"][0] for path in digits[:4]]
    after_alone = served(server.url)
    assert after_alone["network_calls"] - before["network_calls"] == 4  # the control: nothing to wait for
    paths = digits[:4] * 4
    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda path: post_files(server.url, [path]), paths))
    after = served(server.url)
    assert after["images"] - after_alone["images"] == len(paths)
    assert after["network_calls"] - after_alone["network_calls"] < len(paths)
    assert after["largest_batch"] >= 2
    assert_same_rows([answer.json()["predictions"][0] for answer in answers], alone * 4, tolerance=1e-6)


@pytest.mark.slow
def test_a_checkpoint_is_served_too_and_sigterm_stops_the_server(server, pretrained_checkpoint, digits):
    from_checkpoint = start_server(pretrained_checkpoint)
    try:
        answer = post_files(from_checkpoint.url, digits[:2])
        assert_same_rows(answer.json()["predictions"], post_files(server.url, digits[:2]).json()["predictions"])
    finally:
        code = from_checkpoint.stop()
    assert code == 128 + signal.SIGTERM
    assert "serve: stopped by SIGTERM" in "".join(from_checkpoint.lines)
    port = int(from_checkpoint.url.rpartition(":")[2])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "serve: give the folder (python -m project serve FOLDER [--host HOST] [--port N]"),
        (["nowhere"], "nowhere: no such folder or file (give an export folder: python -m project export CKPT)"),
        (["{empty}"], "no config.json in it (python -m project export writes a model folder)"),
        (["{model}", "--port", "70000"], "port: expected a port from 1 to 65535 (or 0: any free one), got 70000"),
        (["{model}", "--max_batch_size", "0"], "max_batch_size: expected 1 or more, got 0"),
        (["{model}", "--batch_timeout_ms", "-1"], "batch_timeout_ms: expected 0 or more milliseconds, got -1.0"),
        (["{model}", "--max-bytes", "10"], "max-bytes is not an option; did you mean max_bytes?"),
        (["{model}", "--host", "192.0.2.1"], "host: 192.0.2.1 is not an address of this machine (127.0.0.1: "),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_command_line_is_one_error_line_before_the_server_starts(
    args, expected, exported_folder, tmp_path, capsys
):
    replaced = [arg.format(empty=tmp_path, model=exported_folder) for arg in args]
    port = [] if "--port" in args or not args else ["--port", "0"]
    assert expected in cli_error(["serve", *replaced, *port], capsys)


def test_a_port_in_use_is_one_error_line(server, exported_folder, capsys):
    port = server.url.rpartition(":")[2]
    message = cli_error(["serve", str(exported_folder), "--port", port], capsys)
    assert message == f"error: port: {port} is in use on 127.0.0.1 (another server?): choose another --port, or stop it"


def test_a_missing_server_package_is_named_with_its_install_command(exported_folder, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "project.inference.serving", raising=False)
    message = cli_error(["serve", str(exported_folder)], capsys)
    assert message == 'error: the fastapi package is not installed, and this run needs it: pip install -e ".[serve]"'


def test_an_array_stands_for_the_png_file_of_its_pixels():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    decoded = np.array(Image.open(io.BytesIO(png_bytes(pixels))))
    assert decoded.tolist() == pixels.tolist() and json.loads(json.dumps(decoded.tolist())) == pixels.tolist()


@pytest.mark.slow
def test_the_load_test_prints_requests_per_second_and_latencies_against_the_unbatched_baseline(
    exported_folder, tmp_path
):
    out = tmp_path / "load.json"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_serve.py"), str(exported_folder)]
    command += ["--requests", "40", "--concurrency", "1", "4", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [(row["max_batch_size"], row["concurrency"]) for row in rows] == [(1, 1), (1, 4), (32, 1), (32, 4)]
    assert all(row["requests_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] for row in rows)
    assert [row["images_per_call"] for row in rows[:2]] == [1, 1]  # the baseline never batches
    assert "| 1 | 4 |" in run.stdout and "| 1.0 | 1.00x | 1.00x |" in run.stdout and "| 32 | 4 |" in run.stdout
