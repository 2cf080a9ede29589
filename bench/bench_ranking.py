"""Answers per second for each ranking stage at 8, 16 and 64 answers per prompt.

    python bench/bench_ranking.py [--groups 8]

Answers are the embedded chatterbot reference answers, so texts are varied and real.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_seconds, write_results  # noqa: E402

from algos.isodata import isodata  # noqa: E402
from algos.textrank import similarity_graph, textrank  # noqa: E402
from configs.schema import IsodataConfig  # noqa: E402
from crowdless.data.prompt_sets import load_prompts  # noqa: E402
from crowdless.ranking import embed, load_embedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=8, help="prompts per measurement")
    args = parser.parse_args()
    examples, _ = load_prompts("embedded:chatterbot")
    answers = [e.reference for e in examples if e.reference]
    embedder = load_embedder()
    embed(embedder, answers[:8])  # warm-up
    isodata_params = IsodataConfig().model_dump()
    figures = {}
    print(f"{'answers/prompt':>15} {'embed ans/s':>12} {'textrank ans/s':>15} {'isodata ans/s':>14}")
    for per_prompt in (8, 16, 64):
        total = per_prompt * args.groups
        texts = answers[:total]
        vectors = embed(embedder, texts)
        groups = vectors.reshape(args.groups, per_prompt, -1)
        embed_s = best_seconds(lambda: embed(embedder, texts))
        textrank_s = best_seconds(lambda: [textrank(similarity_graph(g)) for g in groups])
        isodata_s = best_seconds(lambda: [
            isodata(g, rng=np.random.default_rng(0), **isodata_params) for g in groups])
        row = {"embed": total / embed_s, "textrank": total / textrank_s, "isodata": total / isodata_s}
        figures[f"{per_prompt}_answers_per_prompt"] = row
        print(f"{per_prompt:>15} {row['embed']:>12.0f} {row['textrank']:>15.0f} {row['isodata']:>14.0f}")
    write_results("ranking", figures)


if __name__ == "__main__":
    main()
