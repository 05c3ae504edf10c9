"""Ingest throughput: JSONL file -> readers -> binary COPY -> set-based upsert (no embedding).

Measures records/s for N short records (first load, an unchanged re-load, and a re-load in
which 10 % of the records changed).
"""

from __future__ import annotations

import argparse
import json
import time

from embedplat.api import Platform
from embedplat.ingest import read_records

from .common import WORK, fresh_database, server, settings, write_result


def run(n: int = 100_000) -> dict[str, object]:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"ingest_{n}.jsonl"
    changed = WORK / f"ingest_{n}_changed.jsonl"
    with path.open("w") as fh, changed.open("w") as fh2:
        for i in range(n):
            row = {
                "id": f"doc-{i}",
                "text": f"Short record number {i} about topic {i % 97}.",
                "metadata": {"topic": i % 97, "lang": "en"},
            }
            fh.write(json.dumps(row) + "\n")
            if i % 10 == 0:
                row["text"] += " Edited."
            fh2.write(json.dumps(row) + "\n")
    timings: dict[str, float] = {}
    with server() as url, fresh_database(url) as db, Platform(db, settings()) as platform:
        for label, source in (
            ("first_load", path),
            ("unchanged_reload", path),
            ("reload_10pct_changed", changed),
        ):
            start = time.perf_counter()
            result = platform.ingest_records("bench", read_records([source]))
            seconds = time.perf_counter() - start
            timings[label] = seconds
            print(
                f"{label}: {n / seconds:,.0f} records/s ({result.to_json() | {'problems': len(result.problems)}})"
            )
    return {
        "records": n,
        "record_bytes_avg": round(path.stat().st_size / n, 1),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "records_per_second": {k: round(n / v) for k, v in timings.items()},
        "goal_records_per_second": 20_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100_000)
    args = parser.parse_args()
    print(write_result("ingest", run(args.n)))


if __name__ == "__main__":
    main()
