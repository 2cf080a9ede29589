"""The same rollout workload through vLLM and through transformers `generate`, side by side.

    python bench/bench_rollout.py [--model embedded:smollm2-135m-instruct] [--prompts 16] [--n 8] [--tokens 64]

Prints generated tokens/s per backend (best of --repeats, after one warm-up batch). `vllm-sort`
is vLLM without crowdless's vLLM plugin, so with vLLM's own top-p, which sorts the vocabulary
(crowdless/engines/nucleus.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_results  # noqa: E402


def main() -> None:
    from importlib.metadata import entry_points

    from actors.rollout_worker import RolloutWorker
    from configs.schema import load_config
    from crowdless.data.prompt_sets import load_prompts
    from crowdless.models.loading import resolve_model

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
    answers = {}
    for label, backend in (("vllm", "vllm"), ("vllm-sort", "vllm"), ("transformers", "transformers")):
        if label == "vllm-sort":  # vLLM loads only the plugins named here, in the engine processes it starts
            others = [e.name for e in entry_points(group="vllm.general_plugins") if e.name != "crowdless-nucleus"]
            os.environ["VLLM_PLUGINS"] = ",".join(others)
        else:
            os.environ.pop("VLLM_PLUGINS", None)
        start = time.perf_counter()
        worker = RolloutWorker(path, config.model, config.rollout.model_copy(update={"backend": backend}), seed=0)
        startup = time.perf_counter() - start
        worker.generate(prompts[:2])  # warm-up
        best, answers[label] = 0.0, []
        for _ in range(args.repeats):
            start = time.perf_counter()
            samples = worker.generate(prompts, seed=0)  # seeded as in training: the same draws on both engines
            seconds = time.perf_counter() - start
            tokens = sum(len(r.response_ids) for per_prompt in samples for r in per_prompt)
            best = max(best, tokens / seconds)
            answers[label].append([r.response_text for per_prompt in samples for r in per_prompt])
        figures[label] = {"tokens_per_second": best, "startup_seconds": startup}
        print(f"{label:>12}: {best:8.1f} generated tokens/s  (engine start {startup:.1f}s)", flush=True)
        del worker
    # Seeded answers are the same with the same mask (unseeded ones differ between two starts of one engine).
    figures["vllm_answers_equal_vllm_sort"] = answers["vllm"] == answers["vllm-sort"]
    print(f"vllm and vllm-sort sampled the same answers: {figures['vllm_answers_equal_vllm_sort']}")
    write_results("rollout", figures)


if __name__ == "__main__":
    main()
