"""What a run shows on the terminal, and where everything else goes.

The terminal gets the run's own lines: a header, one progress bar per phase, one line
per iteration, the summary. Engine and library output (vLLM, DeepSpeed, transformers,
Ray) goes to RUN_DIR/logs/<worker>-<pid>.log: each worker process points its stdout and
stderr there when it starts (`capture_worker_output`), so the vLLM engine processes it
spawns inherit the files too. `--verbose` leaves everything on the terminal instead.

Learner phases run inside one remote call; the learner reports its steps to a
`ProgressBoard` actor that the driver reads to draw the bar (`wait_with_progress`).
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


class CallFailed(Exception):
    """One of several remote calls failed: `index` says which, the cause is chained."""

    def __init__(self, index: int, error: BaseException):
        super().__init__(f"call {index} failed: {failure_cause(error)}")
        self.index = index


class CallTimedOut(Exception):
    """Some of several remote calls passed their deadline: `indices` says which."""

    def __init__(self, indices: list[int], seconds: float):
        super().__init__(f"calls {indices} did not finish within {seconds:g}s")
        self.indices, self.seconds = indices, seconds


def wait_all(refs: list, on_poll=None, poll_seconds: float = 0.5, timeout_s: float | None = None) -> list:
    """ray.get of every ref; the first failure raises CallFailed at once, without waiting for the
    others (which may be blocked on the failed one, e.g. in a collective). on_poll() runs between
    polls. Calls still running after timeout_s raise CallTimedOut."""
    import time

    import ray

    results: list = [None] * len(refs)
    pending = {ref: index for index, ref in enumerate(refs)}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        if deadline is not None and time.monotonic() > deadline:
            raise CallTimedOut(sorted(pending.values()), timeout_s)
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=poll_seconds)
        for ref in ready:
            index = pending.pop(ref)
            try:
                results[index] = ray.get(ref)
            except Exception as error:
                raise CallFailed(index, error) from error
        if pending and on_poll is not None:
            on_poll()
    return results


def wait_with_progress(refs: list, board, phase: str, iteration: int, unit: str = "step",
                       timeout_s: float | None = None) -> list:
    """wait_all(refs), drawing a bar from what the worker posts to the board for this phase."""
    import ray
    from tqdm import tqdm

    bar = tqdm(desc=phase, unit=unit, leave=False, total=None)
    shown = [None]

    def draw():
        posted = ray.get(board.read.remote(phase, iteration))
        if posted is not None and posted != shown[0]:  # redraw on progress only: logs stay short
            bar.total, bar.n = posted[1], posted[0]
            bar.refresh()
            shown[0] = posted

    try:
        return wait_all(refs, draw, timeout_s=timeout_s)
    finally:
        bar.close()


def failure_cause(error: BaseException) -> str:
    """The line that says what went wrong, out of a Ray error's nested tracebacks."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        head, _, rest = line.partition(":")
        if head.endswith(("Error", "Exception", "Exit")) and " " not in head:
            return f"{head.rsplit('.', 1)[-1]}:{rest}"  # configs.schema.ConfigError -> ConfigError
    return lines[-1] if lines else type(error).__name__
