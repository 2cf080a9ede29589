"""Shared by the benchmarks: timing and writing figures to bench/results/NAME.json."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def best_seconds(function, repeats: int = 3) -> float:
    """Fastest of `repeats` runs: the least disturbed by other load on the machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def write_results(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "figures": figures,
    }
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return path
