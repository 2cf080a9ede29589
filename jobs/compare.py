"""Ablations and controls: several variants of one config, same seeds and budget, one table.

    python jobs/compare.py --config default --out runs/compare \\
        textrank random:ranking.order=random no-isodata:ranking.deduplicate=false \\
        no-noise:ranking.noise_share=0 [--set run.iterations=4 ...]

Each variant is NAME or NAME:key=value,key=value. Every variant trains in OUT/NAME
(resumed if it already ran) with held-out evaluation on; all variants answer the same
held-out prompts, so each is compared with its own starting point and, paired, with the
first variant. With --seeds 0,1,2 every variant trains once per seed (OUT/NAME/seed-S): one
training run is one draw, and two runs of one config can differ by more than a variant's
effect. --base-iteration 2 measures each run against its own iteration 2 instead of its start;
--iteration 2 judges each run at its iteration 2 instead of its last (a 6-iteration run's first
two iterations, without training them again). Prints the table and writes it to
OUT/comparison.md (or OUT/comparison-iter-N-vs-B.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from configs.schema import ConfigError, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name or "=" in name:
        raise ConfigError(f"variant {text!r}: expected NAME or NAME:key=value,key=value")
    return name, [o for o in overrides.split(",") if o]


def seed_list(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected integers separated by commas") from None


def run_variant(config_path: str, run_dir: Path, overrides: list[str], verbose: bool) -> None:
    command = [sys.executable, str(ROOT / "jobs" / "train.py"), "--config", config_path,
               "--run-dir", str(run_dir), "--resume", *overrides] + (["--verbose"] if verbose else [])
    print(f"[compare] {' '.join(command[1:])}", flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise RuntimeError(f"variant in {run_dir} failed; see {run_dir / 'logs'}")


def last_iteration(run: Path, iterations: int) -> int:
    """A run's last policy: iteration run.iterations, or the one before the iteration at which
    run.stop_at_drift ended it (RUN/stopped.json)."""
    from cluster.run_dir import read_stop

    stop = read_stop(run)
    return stop["iteration"] - 1 if stop else iterations


def _pooled_scores(runs: list[Path], set_name: str, iterations: list[int]) -> dict:
    """Per-prompt scores of one checkpoint per run on one evaluation set, the runs' (seeds') prompts
    one after another: each seed judges its own prompts, so seeds pool rather than average."""
    import numpy as np

    from crowdless.evaluation.judge import read_answers

    per_run = [read_answers(run / "eval" / "answers" / set_name / f"iter-{iteration}.jsonl")[1]
               for run, iteration in zip(runs, iterations)]
    keys = [key for key in per_run[0] if all(key in scores for scores in per_run)]
    return {key: np.concatenate([scores[key] for scores in per_run]) for key in keys}


def _headline(table: dict) -> dict:
    from crowdless.evaluation.judge import HEADLINE

    return {m: table[m] for m in [*HEADLINE, "meteor_nosyn", "loop"] if m in table}


def comparison_rows(variant_runs: dict[str, list[Path]], judged: dict[Path, int], eval_config,
                    seed: int, base_iteration: int = 0):
    """Per evaluation set, one row per run of each variant, at its judged iteration (its own last:
    variants may train for different numbers of iterations, and a run may stop early), then, where a variant ran several seeds, a row on
    all its seeds' prompts together. Each row: (set, label, against its own starting model,
    against the first variant's run(s) of the same seed(s), or None where the two judged different
    prompts: a variant that changes the trained prompts has another trained set). base_iteration:
    the run's own checkpoint each row is measured against (0: the starting model; 2 on a
    6-iteration run: what iterations 3 to 6 added)."""
    from crowdless.evaluation.judge import SETS, compare

    first = next(iter(variant_runs))
    # the sets every run judged: a run from before a set existed (dev) leaves it out of the table
    runs = [run for variant in variant_runs.values() for run in variant]
    sets = [name for name in SETS if all((run / "eval" / "answers" / name).is_dir() for run in runs)]
    rows = []
    for set_name in sets:
        for name, runs in variant_runs.items():
            entries = [(f"{name} ({run.name})" if len(runs) > 1 else name, [i]) for i, run in enumerate(runs)]
            if len(runs) > 1:
                entries.append((f"{name} ({len(runs)} seeds pooled)", list(range(len(runs)))))
            for label, indices in entries:
                own_runs = [runs[i] for i in indices]
                last = _pooled_scores(own_runs, set_name, [judged[run] for run in own_runs])
                base = _pooled_scores(own_runs, set_name, [base_iteration] * len(own_runs))
                own = compare(base, last, seed, eval_config.bootstrap_resamples)
                first_runs = [variant_runs[first][i] for i in indices]
                reference = _pooled_scores(first_runs, set_name, [judged[run] for run in first_runs])
                same_prompts = len(next(iter(reference.values()))) == len(next(iter(last.values())))
                paired = compare(reference, last, seed, eval_config.bootstrap_resamples) if same_prompts else None
                rows.append((set_name, label, _headline(own), _headline(paired) if paired else None))
    return rows


def format_markdown(rows, first: str, base: str = "its base") -> str:
    def cell(row):
        return f"{row['difference']:+.4f} ({row['low']:+.4f}, {row['high']:+.4f})"

    lines = []
    for set_name in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == set_name]
        metrics = list(mine[0][2])
        lines += ["", f"### {set_name}", "",
                  "| variant | " + " | ".join(f"{m}: vs {base}" for m in metrics) + " | "
                  + " | ".join(f"{m}: vs {first}" for m in metrics) + " |",
                  "|---" * (1 + 2 * len(metrics)) + "|"]
        for _, name, own, paired in mine:
            is_first = name == first or name.startswith(f"{first} (")
            lines.append(f"| {name} | " + " | ".join(cell(own[m]) for m in metrics) + " | "
                         + " | ".join("(reference)" if is_first else "(other prompts)" if paired is None
                                      else cell(paired[m]) for m in metrics) + " |")
    return "\n".join(lines).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run config variants on the same seeds; one comparison table.")
    parser.add_argument("--config", default="default")
    parser.add_argument("--out", default="runs/compare", help="folder holding one run per variant")
    parser.add_argument("--set", action="append", default=[], help="key=value for every variant")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="comma-separated run.seed values: every variant runs once per seed, in OUT/NAME/seed-S")
    parser.add_argument("--base-iteration", type=int, default=0,
                        help="measure each run against its own checkpoint N (judged: eval.every), not its start")
    parser.add_argument("--iteration", type=int, default=None,
                        help="judge every run at its checkpoint N (judged: eval.every), not its last: "
                             "iteration 2 of 6-iteration runs without training them again")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("variants", nargs="+", help="NAME or NAME:key=value,key=value")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(v) for v in args.variants]
        out = Path(args.out)
        shared = list(args.set)
        config = load_config(args.config, shared)
        if not config.eval.every:  # a comparison needs the held-out evaluation: before and at the end
            shared.append(f"eval.every={config.run.iterations}")
        # every variant's config is valid before any runs
        final_iterations = {name: load_config(args.config, shared + overrides).run.iterations
                            for name, overrides in variants}
        if args.iteration is not None:
            if args.iteration < 1:
                raise ConfigError(f"--iteration {args.iteration}: a trained checkpoint is 1 or more")
            longer = [name for name, last in final_iterations.items() if args.iteration > last]
            if longer:
                raise ConfigError(f"--iteration {args.iteration}: {', '.join(longer)} train(s) fewer iterations")
        seeds = args.seeds
        variant_runs = {}
        for name, overrides in variants:
            variant_runs[name] = []
            for seed in seeds or [None]:
                run_dir = out / name if seed is None else out / name / f"seed-{seed}"
                run_variant(args.config, run_dir, shared + overrides + ([] if seed is None else [f"run.seed={seed}"]),
                            args.verbose)
                variant_runs[name].append(run_dir)
        for flag, iteration in (("--base-iteration", args.base_iteration), ("--iteration", args.iteration)):
            if iteration is None:
                continue
            missing = [str(run) for runs in variant_runs.values() for run in runs
                       if not list((run / "eval" / "answers").glob(f"*/iter-{iteration}.jsonl"))]
            if missing:
                raise ConfigError(f"{flag} {iteration}: never judged in {', '.join(missing)} "
                                  "(RUN/eval/answers/SET/iter-N.jsonl; eval.every sets which iterations are)")
        judged = {run: args.iteration or last_iteration(run, final_iterations[name])
                  for name, runs in variant_runs.items() for run in runs}
        rows = comparison_rows(variant_runs, judged, config.eval, config.run.seed, args.base_iteration)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = "its base" if args.base_iteration == 0 else f"its iter-{args.base_iteration}"
    table = format_markdown(rows, variants[0][0], base)
    command = "python jobs/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    judged = "final policy" if args.iteration is None else f"policy at iteration {args.iteration}"
    own_base = "the starting one" if args.base_iteration == 0 else f"its own iteration {args.base_iteration}"
    # a table at another checkpoint, or against one, sits beside the final one instead of replacing it
    name = ("comparison.md" if args.iteration is None and args.base_iteration == 0
            else f"comparison-iter-{'last' if args.iteration is None else args.iteration}-vs-{args.base_iteration}.md")
    (out / name).write_text(f"# Comparison\n\n`{command}`\n\nDifference per evaluation set ({judged} minus "
                            f"{own_base}, and minus the first variant's {judged}), "
                            f"with paired bootstrap 95% intervals.\n\n{table}\n")
    print(table)
    print(f"[compare] wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
