"""docs/benchmarks.md from bench/results/*.json: the latest figures of every benchmark.

    python bench/render.py [--results bench/results] [--out docs/benchmarks.md]

Nothing in the output is typed by hand: each section states the command, date, commit and
machine its JSON recorded (bench/common.py::write_results). Dated before/after comparisons
stay in docs/benchmark-history.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def flatten(figures, prefix: str = "") -> list[tuple[str, object]]:
    """Nested figures as (dotted key, value) rows; lists of scalars stay one value."""
    if isinstance(figures, dict):
        rows = []
        for key, value in figures.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(figures, list) and any(isinstance(item, (dict, list)) for item in figures):
        rows = []
        for index, item in enumerate(figures):
            rows += flatten(item, f"{prefix}[{index}]")
        return rows
    return [(prefix, figures)]


def show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def render(results: Path) -> str:
    lines = ["# Benchmarks", "",
             "Rendered by `python bench/render.py` from `bench/results/*.json`; each benchmark writes its",
             "JSON when it runs (`python bench/bench_NAME.py`). Figures from different machines or dates",
             "are not comparable: each section says where and when it was measured.",
             "Dated before/after comparisons: docs/benchmark-history.md."]
    files = sorted(results.glob("*.json"))
    if not files:
        lines += ["", "No results yet: run a benchmark, then this script."]
    for path in files:
        record = json.loads(path.read_text())
        machine = record.get("machine", {})
        where = ", ".join(str(part) for part in (machine.get("cpu"), f"{machine.get('cpu_count')} threads",
                                                 machine.get("cuda")) if part and part != "None threads")
        lines += ["", f"## {path.stem}", "",
                  f"- command: `{record.get('command', '(not recorded)')}`",
                  f"- measured: {record.get('date', '(date not recorded)')}, commit {record.get('commit') or '(not recorded)'}",
                  f"- machine: {where or '(not recorded)'}; {machine.get('platform', '')}", "",
                  "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {show(value)} |" for key, value in flatten(record.get("figures", {}))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    args.out.write_text(render(args.results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
