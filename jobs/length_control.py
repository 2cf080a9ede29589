"""Is a gain more than shorter answers? Each run's final answers against its starting model's,
cut to the same number of words.

    python jobs/length_control.py runs/e24/default/seed-0 [RUN ...] [--iteration 2] [--sets unseen,ood]

Reads RUN/eval/answers/SET/iter-0.jsonl (the start) and iter-N.jsonl, pools the runs' prompts
(one per seed), and prints, per set, paired bootstrap 95% intervals of: the final answers minus
the start's cut to the final answers' length (what the run gained beyond length), and the cut
start minus the start (what length alone is worth). Writes OUT (default: the first run's
eval/length_control.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--iteration", type=int, default=None, help="default: each run's last judged iteration")
    parser.add_argument("--sets", default="unseen,ood")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import numpy as np

    from algos.metrics import load_wordnet
    from crowdless.evaluation.judge import compare, length_matched_scores

    wordnet, result = load_wordnet(), {}
    for set_name in args.sets.split(","):
        start, cut, final = {}, {}, {}
        for run in args.runs:
            folder = run / "eval" / "answers" / set_name
            judged = sorted(int(f.stem[5:]) for f in folder.glob("iter-*.jsonl")) if folder.is_dir() else []
            iteration = args.iteration if args.iteration is not None else (judged[-1] if judged else None)
            if not judged or iteration not in judged or iteration == 0:
                print(f"error: {folder} holds no judged iteration {iteration} beside iter-0 (have {judged})",
                      file=sys.stderr)
                return 2
            rows = [[json.loads(line) for line in (folder / f"iter-{i}.jsonl").read_text().splitlines() if line]
                    for i in (0, iteration)]
            matched = length_matched_scores(rows[0], rows[1], wordnet)
            # only metrics the run's files were scored on too (meteor and meteor_nosyn differ)
            for metric in [m for m in matched if m in rows[0][0] and m in rows[1][0]]:
                cut.setdefault(metric, []).append(matched[metric])
                final.setdefault(metric, []).append(np.array([r[metric] for r in rows[1]], dtype=float))
                start.setdefault(metric, []).append(np.array([r[metric] for r in rows[0]], dtype=float))
        pooled = [{m: np.concatenate(v) for m, v in d.items()} for d in (start, cut, final)]
        beyond = compare(pooled[1], pooled[2], args.seed)
        length_alone = compare(pooled[0], pooled[1], args.seed)
        result[set_name] = {"prompts": len(pooled[0]["chrf"]), "beyond_length": beyond, "length_alone": length_alone}
        print(f"{set_name} ({result[set_name]['prompts']} prompts)")
        for label, table in (("final minus the start cut to its length", beyond),
                             ("the start cut to that length minus the start", length_alone)):
            cells = ", ".join(f"{m} {row['difference']:+.2f} ({row['low']:+.2f}, {row['high']:+.2f})"
                              for m, row in table.items())
            print(f"  {label}: {cells}")
    out = args.out or args.runs[0] / "eval" / "length_control.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"[crowdless] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
