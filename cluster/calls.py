"""Waiting on several Ray calls at once: the first failure at once, a deadline for the rest.

`wait_all` is what the learner group and the driver wait with: a rank that fails ends the wait
without waiting for its peers (which may be blocked on it in a collective), and calls still
running at the deadline raise `CallTimedOut` naming them. `failure_cause` pulls the line that
says what went wrong out of Ray's nested tracebacks.
"""

from __future__ import annotations

import time

import ray


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
