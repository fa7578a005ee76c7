"""Load on identification: one shared Recognizer driven from several threads, as Streamlit's
sessions share the cached one. Reports throughput, p50/p95 latency, errors and peak memory.

    python bench/identify_load.py runs/<run> --photos ../shared/data/lfw --clients 4 --total 200
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run directory")
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--photos", default=str(here.parent / "shared" / "data" / "lfw"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--total", type=int, default=200)
    args = parser.parse_args()

    from celebmodel.data import IMAGE_EXTENSIONS
    from celebmodel.recognize import Recognizer

    photos = sorted(
        p for p in Path(args.photos).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
    )[: args.total]
    payloads = [p.read_bytes() for p in photos]  # uploads arrive as bytes
    recognizer = Recognizer.from_run(args.run)
    recognizer.identify(payloads[0])  # warm-up: graph tracing and detector loading
    after_warmup = rss_mib()

    def one(payload: bytes) -> tuple[float, str | None]:
        start = time.perf_counter()
        try:
            recognizer.identify(payload)
            error = None
        except Exception as exc:  # a load test counts every failure, whatever its type
            error = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start, error

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        results = list(pool.map(one, payloads))
    elapsed = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    errors = [r[1] for r in results if r[1]]
    print(f"photos {len(results)}, clients {args.clients}, wall {elapsed:.1f} s")
    print(f"throughput {len(results) / elapsed:.1f} photos/s")
    print(f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms")
    print(f"errors {len(errors)}" + (f": {errors[:3]}" if errors else ""))
    print(f"peak RSS {rss_mib():.0f} MiB (after warm-up {after_warmup:.0f} MiB)")


if __name__ == "__main__":
    main()
