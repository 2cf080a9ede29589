"""Ablations and controls: several variants of one config, same seeds and budget, one table.

    python jobs/compare.py --config default --out runs/compare \\
        textrank random:ranking.order=random no-isodata:ranking.deduplicate=false \\
        no-noise:ranking.noise_share=0 [--set run.iterations=4 ...]

Each variant is NAME or NAME:key=value,key=value. Every variant trains in OUT/NAME
(resumed if it already ran) with held-out evaluation on; all variants answer the same
held-out prompts, so each is compared with its own starting point and, paired, with the
first variant. Prints the table and writes it to OUT/comparison.md.
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


def run_variant(config_path: str, run_dir: Path, overrides: list[str], verbose: bool) -> None:
    command = [sys.executable, str(ROOT / "jobs" / "train.py"), "--config", config_path,
               "--run-dir", str(run_dir), "--resume", *overrides] + (["--verbose"] if verbose else [])
    print(f"[compare] {' '.join(command[1:])}", flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise RuntimeError(f"variant in {run_dir} failed; see {run_dir / 'logs'}")


def comparison_rows(out: Path, final_iterations: dict[str, int], eval_config, seed: int):
    """Each variant's last iteration (variants may train for different numbers of iterations)."""
    from crowdless.evaluation import HEADLINE, compare, read_answers

    names = list(final_iterations)
    scores = {}
    for name, iterations in final_iterations.items():
        _, base = read_answers(out / name / "eval" / "answers" / "iter-0.jsonl")
        _, last = read_answers(out / name / "eval" / "answers" / f"iter-{iterations}.jsonl")
        scores[name] = (base, last)
    rows = []
    first = names[0]
    for name in names:
        base, last = scores[name]
        own = compare(base, last, seed, eval_config.bootstrap_resamples)
        paired = compare(scores[first][1], last, seed, eval_config.bootstrap_resamples)
        rows.append((name, {m: own[m] for m in HEADLINE}, {m: paired[m] for m in HEADLINE}))
    return rows


def format_markdown(rows, first: str) -> str:
    from crowdless.evaluation import HEADLINE

    def cell(row):
        return f"{row['difference']:+.4f} ({row['low']:+.4f}, {row['high']:+.4f})"

    header = ("| variant | " + " | ".join(f"{m}: vs its base" for m in HEADLINE) + " | "
              + " | ".join(f"{m}: vs {first}" for m in HEADLINE) + " |")
    lines = [header, "|---" * (1 + 2 * len(HEADLINE)) + "|"]
    for name, own, paired in rows:
        lines.append(f"| {name} | " + " | ".join(cell(own[m]) for m in HEADLINE) + " | "
                     + " | ".join("(reference)" if name == first else cell(paired[m]) for m in HEADLINE) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run config variants on the same seeds; one comparison table.")
    parser.add_argument("--config", default="default")
    parser.add_argument("--out", default="runs/compare", help="folder holding one run per variant")
    parser.add_argument("--set", action="append", default=[], help="key=value for every variant")
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
        for name, overrides in variants:
            run_variant(args.config, out / name, shared + overrides, args.verbose)
        rows = comparison_rows(out, final_iterations, config.eval, config.run.seed)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = format_markdown(rows, variants[0][0])
    command = "python jobs/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "comparison.md").write_text(f"# Comparison\n\n`{command}`\n\nHeld-out difference (final policy minus "
                                       "the starting one, and minus the first variant's final policy), "
                                       f"with paired bootstrap 95% intervals.\n\n{table}\n")
    print(table)
    print(f"[compare] wrote {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
