"""python -m serve --model RUN_DIR_OR_MODEL_REF [--port 8000] [--config default] [key.sub=value ...]

Starts (or joins) Ray, runs the Serve app on the given port and blocks until Ctrl-C. The app
serves the model and the tuning service (/v1/files, /v1/fine_tuning/jobs: serve/tuning.py), whose
jobs run as Ray jobs on this Ray cluster, with their state under serve.state_dir or
CROWDLESS_STATE_DIR.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run directory (serves checkpoints/latest) or model ref")
    parser.add_argument("--config", default="default", help="crowdless config (model, rollout, serve sections)")
    parser.add_argument("--host", help="overrides serve.host")
    parser.add_argument("--port", type=int, help="overrides serve.port")
    parser.add_argument("--name", help="model name clients use (default: the run directory's name)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value")
    args = parser.parse_intermixed_args(argv)

    import ray
    from ray import serve

    from configs.schema import ConfigError, load_config
    from serve.app import start_app

    overrides = list(args.overrides)
    overrides += [f"serve.host={args.host}"] if args.host else []
    overrides += [f"serve.port={args.port}"] if args.port else []
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ray.init(ignore_reinit_error=True)
    start_app(args.model, args.config, overrides, config.serve.host, config.serve.port, args.name)
    print(f"[crowdless.serve] serving {args.model} on http://{config.serve.host}:{config.serve.port}/v1",
          flush=True)
    try:
        while True:
            # Short sleeps: a SIGINT the kernel hands to another thread (Ray's) only sets Python's
            # flag, and the main thread raises KeyboardInterrupt when its sleep ends; with long ones,
            # Serve outlived a stopped server and kept its port from the next one.
            time.sleep(1)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
