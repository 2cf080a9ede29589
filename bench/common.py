"""Shared by the benchmarks: timing and writing figures to bench/results/NAME.json."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
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


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=RESULTS.parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_results(name: str, figures: dict) -> Path:
    """bench/results/NAME.json: the figures with the command, date, commit and machine that made
    them; `python bench/render.py` turns every such file into docs/benchmarks.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": {"cpu_count": torch.get_num_threads(), "cpu": _cpu_name(), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "figures": figures,
    }
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return path
