"""Per-phase seconds and throughput of whole training iterations, from a real run.

    python bench/bench_iteration.py [--config default] [--out NAME] [--keep-run] [key.sub=value ...]

Runs jobs/train.py into a fresh temporary run directory and reports what its metrics.jsonl
recorded. The run directory (checkpoints included, several GB) is removed afterwards unless
--keep-run is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("rollout", "rank", "reward_model", "policy", "weight_sync", "checkpoint")
RATES = ("rollout_tokens_per_second", "rm_pairs_per_second", "policy_tokens_per_second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--out", default=None,
                        help="results file name under bench/results/ (default iteration-CONFIG)")
    parser.add_argument("--keep-run", action="store_true",
                        help="keep the temporary run directory (checkpoints, logs) and print its path")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="crowdless-bench-")) / "run"
    try:
        subprocess.run([sys.executable, "jobs/train.py", "--config", args.config, "--run-dir", str(run_dir),
                        *args.overrides], cwd=ROOT, check=True)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    finally:
        if args.keep_run:
            print(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir.parent, ignore_errors=True)
    rows = [row for row in rows if row["iteration"] >= 1]  # iteration 0: the held-out baseline
    columns = [f"seconds_{p}" for p in PHASES] + list(RATES)
    # phases and rates a run did not have (no reward model under reward.source=ranker) are blank
    figures = [{key: row.get(key) for key in ("iteration", *columns)} for row in rows]
    print(f"{'iter':>4} " + " ".join(f"{p:>12}" for p in PHASES) + " " + " ".join(f"{r[:-11]:>22}" for r in RATES))
    for row in figures:
        print(f"{row['iteration']:>4} "
              + " ".join(f"{row[c]:>11.1f}s" if row[c] is not None else f"{'-':>12}" for c in columns[:len(PHASES)])
              + " " + " ".join(f"{row[r]:>22.1f}" if row[r] is not None else f"{'-':>22}" for r in RATES))
    write_results(args.out or f"iteration-{Path(args.config).stem}",
                  {"config": args.config, "overrides": args.overrides, "iterations": figures})

if __name__ == "__main__":
    main()
