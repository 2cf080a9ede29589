"""The same rollout workload through vLLM and through transformers `generate`, side by side.

    python bench/bench_rollout.py [--model embedded:smollm2-135m-instruct] [--prompts 16] [--n 8] [--tokens 64]

Prints generated tokens/s per backend (best of --repeats, after one warm-up batch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_results  # noqa: E402


def main() -> None:
    from actors.rollout_worker import RolloutWorker
    from configs.schema import load_config
    from crowdless.data import load_prompts
    from crowdless.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    config = load_config("default", [f"model.policy={args.model}", f"rollout.samples_per_prompt={args.n}",
                                      f"rollout.max_new_tokens={args.tokens}"])
    prompts = [e.prompt for e in load_prompts("embedded:chatterbot")[0][: args.prompts]]
    path = resolve_model(args.model)
    figures = {"workload": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.tokens,
                            "model": args.model, "dtype": config.model.dtype}}
    for backend in ("vllm", "transformers"):
        start = time.perf_counter()
        worker = RolloutWorker(path, config.model, config.rollout.model_copy(update={"backend": backend}), seed=0)
        startup = time.perf_counter() - start
        worker.generate(prompts[:2])  # warm-up
        best = 0.0
        for _ in range(args.repeats):
            start = time.perf_counter()
            samples = worker.generate(prompts)
            seconds = time.perf_counter() - start
            tokens = sum(len(r.response_ids) for per_prompt in samples for r in per_prompt)
            best = max(best, tokens / seconds)
        figures[backend] = {"tokens_per_second": best, "startup_seconds": startup}
        print(f"{backend:>12}: {best:8.1f} generated tokens/s  (engine start {startup:.1f}s)", flush=True)
        del worker
    write_results("rollout", figures)


if __name__ == "__main__":
    main()
