"""What a run shows on the terminal, and where everything else goes.

The terminal gets the run's own lines: a header, one progress bar per phase, one line
per iteration, the summary. Engine and library output (vLLM, DeepSpeed, transformers,
Ray) goes to RUN_DIR/logs/<worker>-<pid>.log: each worker process points its stdout and
stderr there when it starts (`capture_worker_output`), so the vLLM engine processes it
spawns inherit the files too. `--verbose` leaves everything on the terminal instead.

Learner phases run inside one remote call; the learner reports its steps to a
`ProgressBoard` actor that the driver reads to draw the bar (cluster/calls.py,
`wait_with_progress`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_DIR_ENV = "CROWDLESS_LOG_DIR"


def log_dir_env(run_dir: Path, verbose: bool) -> dict[str, str]:
    """Environment for worker processes: where their output goes (nothing when verbose)."""
    if verbose:
        return {}
    folder = run_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return {LOG_DIR_ENV: str(folder)}


def capture_worker_output(name: str) -> Path | None:
    """In a worker process: send fd 1 and 2 (and child processes') to LOG_DIR/name-PID.log."""
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name}-{os.getpid()}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path


def quiet_driver_libraries() -> None:
    """The driver's own library chatter (Ray start-up, transformers, DeepSpeed) below errors."""
    for name in ("ray", "ray.serve", "ray.data", "DeepSpeed", "transformers", "filelock", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class ProgressBoard:
    """Tiny actor: the learner posts (done, total) per (phase, iteration); the driver reads it."""

    def __init__(self):
        self.state: dict[tuple[str, int], tuple[int, int]] = {}

    def update(self, phase: str, iteration: int, done: int, total: int) -> None:
        self.state[(phase, iteration)] = (done, total)

    def read(self, phase: str, iteration: int) -> tuple[int, int] | None:
        return self.state.get((phase, iteration))
