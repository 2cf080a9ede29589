"""Load on the running Serve app: requests/s, p50 / p95 latency, output tokens/s at concurrency 1, 8, 32.

    python -m serve --model runs/default &          # or any model reference
    python bench/bench_serve.py --url http://127.0.0.1:8000/v1 [--requests 64] [--max-tokens 32]
    python bench/bench_serve.py --start embedded:smollm2-135m-instruct   # starts the app itself
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_results  # noqa: E402


async def load(url: str, key: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    latencies, tokens = [], 0

    async def one(i: int):
        nonlocal tokens
        async with gate:
            start = time.perf_counter()
            response = await client.completions.create(model=model, prompt=f"Question {i}: why is the sky blue?",
                                                       max_tokens=max_tokens, temperature=0.8)
            latencies.append(time.perf_counter() - start)
            tokens += response.usage.completion_tokens

    start = time.perf_counter()
    async with client:  # closed inside this event loop (asyncio.run makes one per load level)
        await asyncio.gather(*(one(i) for i in range(requests)))
    seconds = time.perf_counter() - start
    latencies.sort()
    return {"requests_per_second": requests / seconds, "p50_seconds": latencies[len(latencies) // 2],
            "p95_seconds": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "output_tokens_per_second": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--key", default="none")
    parser.add_argument("--start", help="start the app on this model (run dir or model ref) first")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.start:
        import ray
        from ray import serve

        from serve.app import build_app

        ray.init(ignore_reinit_error=True)
        serve.start(http_options={"host": "127.0.0.1", "port": 8000})
        serve.run(build_app({"model": args.start}), name="crowdless", route_prefix="/")
        args.url = "http://127.0.0.1:8000/v1"
    from openai import OpenAI

    model = OpenAI(base_url=args.url, api_key=args.key).models.list().data[0].id
    asyncio.run(load(args.url, args.key, model, 1, 2, args.max_tokens))  # warm-up
    figures = {"model": model, "requests": args.requests, "max_tokens": args.max_tokens}
    print(f"{'concurrency':>11} {'req/s':>8} {'p50 s':>8} {'p95 s':>8} {'out tok/s':>10}")
    for concurrency in (1, 8, 32):
        row = asyncio.run(load(args.url, args.key, model, concurrency, args.requests, args.max_tokens))
        figures[f"concurrency_{concurrency}"] = row
        print(f"{concurrency:>11} {row['requests_per_second']:>8.2f} {row['p50_seconds']:>8.2f} "
              f"{row['p95_seconds']:>8.2f} {row['output_tokens_per_second']:>10.1f}", flush=True)
    write_results("serve", figures)


if __name__ == "__main__":
    main()
