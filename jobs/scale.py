"""Scale a running job's rollout workers: the driver reads RUN_DIR/control.yaml before each iteration.

    python jobs/scale.py RUN_DIR --rollout-workers N
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from configs.schema import ConfigError, ControlConfig, load_control  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rollout-workers", type=int, required=True)
    args = parser.parse_args(argv)
    if args.rollout_workers < 1:
        print("error: --rollout-workers must be at least 1", file=sys.stderr)
        return 2
    if not (args.run_dir / "config.yaml").exists():
        print(f"error: {args.run_dir} is not a crowdless run directory (no config.yaml)", file=sys.stderr)
        return 2
    path = args.run_dir / "control.yaml"
    try:  # the same schema the driver reads it with: what is written here is what it applies
        control = load_control(path) if path.exists() else ControlConfig()
        control.rollout_workers = args.rollout_workers
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path.write_text(yaml.safe_dump(control.model_dump(exclude_none=True)))
    print(f"{path}: rollout_workers={args.rollout_workers} (applied at the next iteration)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
