"""Where a checkpoint moved the human references' log-probability, token by token.

    python jobs/reference_tokens.py --run-dir runs/default [--checkpoint N] [--set dev]

`ref_logprob` (the judge) is each reference's mean per-token log-probability; this splits its
change against the run's starting model by where the token sits: the reference's closing EOS,
its first token, the others, and by position. A run that taught the policy never to stop shows
a large fall at the EOS (docs/experiments.md E24). Reads the set's prompts and references from
RUN/eval/sets.json (written by the judge); prints the figures and writes them to
RUN/eval/reference_tokens-iter-N-SET.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from cluster.run_dir import write_eval_file  # noqa: E402
from configs.schema import ConfigError, load_config  # noqa: E402
from jobs.evaluate import PolicyLikelihood, select_checkpoints  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--checkpoint", default="latest", help="latest or an iteration number")
    parser.add_argument("--set", default="dev", help="an evaluation set in RUN/eval/sets.json")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        config = load_config(run_dir / "config.yaml", [])
        [(iteration, folder)] = select_checkpoints(run_dir, args.checkpoint)
        sets_file = run_dir / "eval" / "sets.json"
        if not sets_file.exists():
            raise ConfigError(f"{sets_file} does not exist: the run has not been judged (eval.every)")
        sets = json.loads(sets_file.read_text())
        if args.set not in sets:
            raise ConfigError(f"--set {args.set!r}: {sets_file} holds {sorted(sets)}")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from crowdless.models.likelihood import logprob_shift_by_position
    from crowdless.models.loading import resolve_model

    pairs = [(item["prompt"], reference) for item in sets[args.set] for reference in item["references"]]
    prompts, references = [p for p, _ in pairs], [r for _, r in pairs]
    likelihood = PolicyLikelihood(config)
    likelihood.load(resolve_model(config.model.policy))
    before = likelihood.tokens(prompts, references)
    likelihood.load(str(folder / "policy"))
    after = likelihood.tokens(prompts, references)
    shift = logprob_shift_by_position(before, after, likelihood.tokenizer.eos_token_id)
    print(f"{args.set}: {len(pairs)} references, iteration {iteration} minus the start, nats per token")
    for name, value in shift.items():
        print(f"  {name:12s} {value:+.3f}")
    out = write_eval_file(run_dir, f"reference_tokens-iter-{iteration}-{args.set}.json",
                          {"set": args.set, "iteration": iteration, "references": len(pairs), **shift})
    print(f"[crowdless] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
