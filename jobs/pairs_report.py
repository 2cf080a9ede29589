"""What each iteration taught: the sampled answers and the pairs built from them, per iteration.

    python jobs/pairs_report.py runs/default [--echo-share 0.8]

Reads RUN/samples/iter-N.jsonl and prints, per iteration, the sampled answers' mean length in
words and the share that echo the prompt (algos/pairs.echoes_prompt), and the same for the
chosen and the rejected sides of the real (not noised) pairs. A policy collapsing onto short
answers or onto echoes of the prompt shows here before the judge sees it (docs/experiments.md
E25). Writes RUN/eval/pairs_report.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from algos.pairs import echoes_prompt  # noqa: E402
from cluster.run_dir import read_samples, write_eval_file  # noqa: E402

COLUMNS = ("answer_words", "answer_echoes", "chosen_words", "chosen_echoes", "rejected_words", "rejected_echoes")


def iteration_report(groups: list[dict], echo_share: float) -> dict[str, float]:
    """Mean words and echo share of a samples file's answers, chosen and rejected sides."""
    sides: dict[str, list[tuple[str, str]]] = {"answer": [], "chosen": [], "rejected": []}
    for group in groups:
        sides["answer"] += [(group["prompt"], answer) for answer in group["answers"]]
        for pair in group["pairs"]:
            if not pair.get("noised"):
                sides["chosen"].append((group["prompt"], pair["chosen"]))
                sides["rejected"].append((group["prompt"], pair["rejected"]))
    report = {}
    for side, texts in sides.items():
        count = max(1, len(texts))
        report[f"{side}_words"] = sum(len(answer.split()) for _, answer in texts) / count
        report[f"{side}_echoes"] = sum(echoes_prompt(answer, prompt, echo_share) for prompt, answer in texts) / count
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--echo-share", type=float, default=0.8, help="as ranking.echo_share")
    args = parser.parse_args(argv)
    samples = read_samples(args.run)
    if not samples:
        print(f"error: no samples in {args.run / 'samples'} (iter-N.jsonl); is it a run directory?", file=sys.stderr)
        return 2
    reports = {}
    print("iteration  " + "  ".join(COLUMNS))
    for iteration, groups in samples.items():
        report = reports[iteration] = iteration_report(groups, args.echo_share)
        print(f"{iteration:>9}  " + "  ".join(f"{report[c]:>{len(c)}.2f}" for c in COLUMNS))
    print(f"[crowdless] wrote {write_eval_file(args.run, 'pairs_report.json', reports)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
