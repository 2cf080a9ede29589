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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from cluster.run_dir import read_samples, write_eval_file  # noqa: E402
from configs.schema import ConfigError, load_config  # noqa: E402


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
    samples = read_samples(args.run)
    checkpoints = sorted(int(f.name[5:]) for f in (args.run / "checkpoints").glob("iter-*")
                         if int(f.name[5:]) + 1 in samples)
    if not checkpoints:
        print(f"error: {args.run} has no checkpoint N with samples/iter-(N+1).jsonl beside it", file=sys.stderr)
        return 2
    from crowdless.models.loading import resolve_model
    from jobs.evaluate import PolicyLikelihood

    likelihood = PolicyLikelihood(config)
    # the first --answers rows sampled by checkpoint n, in file order
    rows = {n: [(group["prompt"], answer) for group in samples[n + 1] for answer in group["answers"]][:args.answers]
            for n in checkpoints}

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
    print(f"[crowdless] wrote {write_eval_file(args.run, 'policy_drift.json', drift)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
