#!/usr/bin/env python
"""A load test of the prediction server (``python -m project serve``): requests per second, p50/p99 latency and
images per network call at several concurrencies, for each ``--max_batch_size`` (1: no batching, the baseline), with
each row's ratio to the baseline at the same concurrency, measured in the same run.

    python scripts/benchmark_serve.py exported/mnist
    python scripts/benchmark_serve.py exported/mnist --requests 2000 --concurrency 1 8 32 --batch_sizes 1 32

For each batch size a server of the model is started in its own process (``--port 0``) and warmed up; then at each
concurrency each server in turn (a row beside its baseline, under the same load of the machine) is loaded by
``--concurrency`` clients at a time (asyncio and httpx, keep-alive connections), each posting one image per request as
``multipart/form-data`` (a PNG of random pixels of the size the model takes, as ``/health`` says) until
``--requests`` have been answered; then the servers are stopped with SIGTERM. The clients run on the same machine as
the server and share its cores: on a small machine they take a large part of them, so the numbers are the system's.
Prints a Markdown table; ``--out`` writes the results as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_server(folder: Path, batch_size: int, timeout_ms: float) -> tuple[subprocess.Popen, str]:
    """``python -m project serve FOLDER`` with ``batch_size``, on a free port; its process and address."""
    command = [sys.executable, "-m", "project", "serve", str(folder), "--port", "0"]
    command += ["--max_batch_size", str(batch_size), "--batch_timeout_ms", str(timeout_ms)]
    paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r" on (http://[^ ]+): POST", "".join(lines))
        if found:
            return process, found.group(1)
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start: {''.join(lines)[-2000:]}")


def test_image(url: str) -> bytes:
    """A PNG of random pixels of the size and channels the served model takes."""
    about = httpx.get(f"{url}/health", timeout=60).json()["input"]
    shape = (about["image_size"], about["image_size"]) + (() if about["channels"] == 1 else (3,))
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


async def load(url: str, image: bytes, concurrency: int, requests: int) -> dict[str, float]:
    """``requests`` posts of ``image`` by ``concurrency`` clients at a time: requests/s, p50 and p99 latency (ms)."""
    latencies: list[float] = []
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def client_loop() -> None:
            for _ in remaining:
                start = time.perf_counter()
                answer = await client.post(f"{url}/predict", files={"files": ("image.png", image, "image/png")})
                latencies.append(time.perf_counter() - start)
                answer.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {"requests_per_s": requests / seconds, "p50_ms": 1000 * quantiles[49], "p99_ms": 1000 * quantiles[98]}


def measure(folder: Path, options: argparse.Namespace) -> list[dict[str, float]]:
    """Every concurrency against a server of each batch size, all started (and warmed up) first, then measured in
    turn at each concurrency: a row and its baseline are measured one after the other, under the same load."""
    servers = {size: start_server(folder, size, options.batch_timeout_ms) for size in options.batch_sizes}
    try:
        image = test_image(next(iter(servers.values()))[1])
        for _, url in servers.values():
            asyncio.run(load(url, image, max(options.concurrency), max(options.concurrency) * 4))  # warm-up
        rows = []
        for concurrency in options.concurrency:
            for size, (_, url) in servers.items():
                before = httpx.get(f"{url}/health", timeout=60).json()["served"]
                result = asyncio.run(load(url, image, concurrency, options.requests))
                after = httpx.get(f"{url}/health", timeout=60).json()["served"]
                result["images_per_call"] = (after["images"] - before["images"]) / (
                    after["network_calls"] - before["network_calls"]
                )
                rows.append({"max_batch_size": size, "concurrency": concurrency, **result})
                print(f"max_batch_size {size}, concurrency {concurrency}: {result}", file=sys.stderr, flush=True)
        return sorted(rows, key=lambda row: (row["max_batch_size"], row["concurrency"]))
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in servers.values():
            process.wait(timeout=120)


def table(rows: list[dict[str, float]]) -> str:
    """The results as Markdown, each row's ratios against the least max_batch_size at the same concurrency."""
    least = min(row["max_batch_size"] for row in rows)
    baseline = {row["concurrency"]: row for row in rows if row["max_batch_size"] == least}
    lines = [
        "| max_batch_size | concurrency | requests/s | p50 ms | p99 ms | images per call | requests/s vs baseline "
        "| p99 vs baseline |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        base = baseline[row["concurrency"]]
        lines.append(
            f"| {row['max_batch_size']} | {row['concurrency']} | {row['requests_per_s']:.0f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['images_per_call']:.1f} | "
            f"{row['requests_per_s'] / base['requests_per_s']:.2f}x | {row['p99_ms'] / base['p99_ms']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an export folder (python -m project export CKPT --out FOLDER)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="clients at a time")
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[1, 32], help="servers' --max_batch_size; the least: baseline"
    )
    parser.add_argument("--batch_timeout_ms", type=float, default=5.0, help="the servers' --batch_timeout_ms")
    parser.add_argument("--out", type=Path, help="the results as JSON")
    options = parser.parse_args()
    rows = measure(options.folder, options)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"{options.requests} requests per row, one PNG image per request; {machine}\n")
    print(table(rows))
    if options.out:
        options.out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
