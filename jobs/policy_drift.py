"""How far each checkpoint moved from the starting model, measured on its own samples, no labels.

    python jobs/policy_drift.py runs/default [--answers 64]

RUN/samples/iter-(N+1).jsonl holds answers the policy of checkpoint N sampled; the mean over
them of log pi_N(y|x) - log pi_start(y|x), summed over each answer's tokens, estimates
KL(pi_N || pi_start) in nats per answer. A label-free signal of drift: in E25 the references
held while it stayed near 6 nats and fell once it passed 11. Prints it per checkpoint and
writes RUN/eval/policy_drift.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from configs.schema import ConfigError, load_config  # noqa: E402


def sampled_rows(run: Path, iteration: int, limit: int) -> list[tuple[str, str]]:
    """The first `limit` (prompt, answer) rows sampled at `iteration`, in file order."""
    groups = [json.loads(line) for line in (run / "samples" / f"iter-{iteration}.jsonl").read_text().splitlines()
              if line]
    return [(group["prompt"], answer) for group in groups for answer in group["answers"]][:limit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--answers", type=int, default=64, help="sampled answers per checkpoint")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.run / "config.yaml", [])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    checkpoints = sorted(int(f.name[5:]) for f in (args.run / "checkpoints").glob("iter-*")
                         if (args.run / "samples" / f"iter-{int(f.name[5:]) + 1}.jsonl").exists())
    if not checkpoints:
        print(f"error: {args.run} has no checkpoint N with samples/iter-(N+1).jsonl beside it", file=sys.stderr)
        return 2
    from crowdless.models.loading import resolve_model
    from jobs.evaluate import PolicyLikelihood

    likelihood = PolicyLikelihood(config)
    rows = {n: sampled_rows(args.run, n + 1, args.answers) for n in checkpoints}

    def sums(n: int) -> list[float]:  # each answer's tokens (the judge's EOS included), summed
        return [sum(logprobs) for _, logprobs in likelihood.tokens([prompt for prompt, _ in rows[n]],
                                                                   [answer for _, answer in rows[n]])]

    likelihood.load(resolve_model(config.model.policy))
    start = {n: sums(n) for n in checkpoints}
    drift = {}
    for n in checkpoints:
        likelihood.load(str(args.run / "checkpoints" / f"iter-{n}" / "policy"))
        drift[n] = sum(a - b for a, b in zip(sums(n), start[n])) / len(rows[n])
        print(f"iteration {n}: KL(policy || start) on its own samples about {drift[n]:.2f} nats per answer", flush=True)
    out = args.run / "eval" / "policy_drift.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(drift, indent=1) + "\n")
    print(f"[crowdless] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
