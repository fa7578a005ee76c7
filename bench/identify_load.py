"""Load on identification: one shared Recognizer driven from several threads, as Streamlit's
sessions share the cached one. Reports throughput, p50/p95 latency, errors and memory (the
resident size after each quarter of the photos, to show it stays flat, and the peak).

Photos are taken in turn from each celebrity folder, as uploads in bytes.

    python bench/identify_load.py runs/<run> --photos ../shared/data/lfw --clients 4 --total 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, peak_rss_mib, photos_in_turn, rss_mib  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run directory")
    parser.add_argument("--photos", default=str(SHARED / "lfw"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--total", type=int, default=200)
    args = parser.parse_args()

    from celebmodel.data.images import IMAGE_EXTENSIONS
    from celebmodel.recognition.recognize import Recognizer

    photos = photos_in_turn(Path(args.photos), args.total, IMAGE_EXTENSIONS)
    if not photos:
        parser.error(f"{args.photos}: no photos found")
    payloads = [p.read_bytes() for p in photos]  # uploads arrive as bytes
    recognizer = Recognizer.from_run(args.run)
    recognizer.identify(payloads[0])  # warm-up: graph tracing and detector loading
    memory = [rss_mib()]

    def one(payload: bytes) -> tuple[float, str | None]:
        start = time.perf_counter()
        try:
            recognizer.identify(payload)
            error = None
        except Exception as exc:  # a load test counts every failure, whatever its type
            error = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start, error

    quarter = max(1, len(payloads) // 4)
    results: list[tuple[float, str | None]] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        for offset in range(0, len(payloads), quarter):
            results += pool.map(one, payloads[offset : offset + quarter])
            memory.append(rss_mib())
    elapsed = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    errors = [r[1] for r in results if r[1]]
    print(f"photos {len(results)}, clients {args.clients}, wall {elapsed:.1f} s")
    print(f"throughput {len(results) / elapsed:.1f} photos/s")
    print(
        f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms"
    )
    print(f"errors {len(errors)}" + (f": {errors[:3]}" if errors else ""))
    print(
        "RSS after warm-up and each quarter: "
        + " -> ".join(f"{m:.0f}" for m in memory)
        + f" MiB; peak {peak_rss_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
