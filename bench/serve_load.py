"""The HTTP API under load: POST /identify with 1, 4 and 8 concurrent clients against a real
``celebmodel serve`` process, beside ``Recognizer.identify`` called directly from as many
threads on the same photos. Prints requests per second and p50/p95 latency per row.

Photos are taken in turn from each celebrity folder and sent as uploads (bytes); every
client keeps its HTTP connection open. The server is stopped before the direct rows run, so
the two never share the cores. (The clients run on the same machine, so they take some CPU
from the server too.)

    python bench/serve_load.py runs/<run> --photos ../shared/data/lfw --requests 96
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED  # noqa: E402
from _common import photos_in_turn as one_round  # noqa: E402


def photos_in_turn(folder: Path, total: int, extensions: set[str]) -> list[Path]:
    """``total`` photos, one from each celebrity sub-folder in turn (repeated when short)."""
    chosen = one_round(folder, sys.maxsize, extensions)
    return (chosen * (total // max(1, len(chosen)) + 1))[:total] if chosen else []


def measure(call: Callable[[int], None], clients: int, total: int) -> dict[str, float]:
    """Run ``call(i)`` for ``i < total`` from ``clients`` threads, each warmed up first:
    rate, latencies, errors."""

    def timed(i: int) -> tuple[float, str | None]:
        start = time.perf_counter()
        try:
            call(i)
            error = None
        except Exception as exc:  # a load test counts every failure, whatever its type
            error = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start, error

    together = threading.Barrier(clients)

    def warm(i: int) -> None:
        call(i)
        together.wait(timeout=300)  # holds each thread until all exist: every one is warm

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(warm, range(clients)))  # a thread's first call (its HOG detector, its
        start = time.perf_counter()  # connection) is not what a long-running server sees
        results = list(pool.map(timed, range(total)))
        elapsed = time.perf_counter() - start
    latencies = sorted(seconds for seconds, _ in results)
    errors = [error for _, error in results if error]
    if errors:
        print(f"  {len(errors)} error(s), first: {errors[0]}", file=sys.stderr)
    return {
        "rate": total / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p95": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "errors": len(errors),
    }


def start_server(run: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``celebmodel serve RUN --port 0`` and its URL, once ``/health`` answers."""
    import httpx

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("CELEBMODEL_API_KEY", None)
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "celebmodel", "serve", run, "--port", "0"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped:\n{log.read_text()[-3000:]}")
        found = re.search(r"at (http://\S+) \(API docs", log.read_text())
        if found:
            try:
                if httpx.get(f"{found.group(1)}/health", timeout=5).status_code == 200:
                    return server, found.group(1)
            except httpx.TransportError:
                pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"the server did not start:\n{log.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run directory")
    parser.add_argument("--photos", default=str(SHARED / "lfw"))
    parser.add_argument("--requests", type=int, default=96, help="requests per row")
    parser.add_argument("--clients", default="1,4,8", help="concurrent clients, comma-separated")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]

    import httpx

    from celebmodel.data.images import IMAGE_EXTENSIONS

    photos = photos_in_turn(Path(args.photos), args.requests, IMAGE_EXTENSIONS)
    if not photos:
        parser.error(f"{args.photos}: no photos found")
    payloads = [(p.name, p.read_bytes()) for p in photos]
    rows = []

    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "server.log"
        started = time.perf_counter()
        server, url = start_server(args.run, log)
        print(f"server ready in {time.perf_counter() - started:.1f} s at {url}", file=sys.stderr)
        try:
            for clients in levels:
                limits = httpx.Limits(max_connections=clients)  # one kept-alive per client
                with httpx.Client(base_url=url, timeout=300, limits=limits) as http:

                    def post(i: int, http: httpx.Client = http) -> None:
                        name, data = payloads[i]
                        http.post("/identify", files={"file": (name, data)}).raise_for_status()

                    rows.append(("POST /identify", clients, measure(post, clients, len(payloads))))
        finally:
            server.terminate()
            server.wait(timeout=30)

    from celebmodel.recognition.recognize import Recognizer

    recognizer = Recognizer.from_run(args.run).warm_up()
    recognizer.identify(payloads[0][1])

    def direct(i: int) -> None:
        recognizer.identify(payloads[i][1])

    for clients in levels:
        rows.append(("Recognizer.identify", clients, measure(direct, clients, len(payloads))))

    print(
        f"run {Path(args.run).name}; {len(payloads)} requests per row from {args.photos}; "
        f"{os.cpu_count()} cores"
    )
    print(f"{'path':22s}{'clients':>8s}{'req/s':>9s}{'p50 ms':>9s}{'p95 ms':>9s}{'errors':>8s}")
    for path, clients, row in rows:
        print(
            f"{path:22s}{clients:8d}{row['rate']:9.1f}{row['p50']:9.0f}{row['p95']:9.0f}"
            f"{row['errors']:8d}"
        )


if __name__ == "__main__":
    main()
