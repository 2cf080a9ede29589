"""WorkerPool: N Ray actors of one worker class, work pulled in chunks, failures redone.

`map` cuts the items into chunks and every idle worker pulls the next one, so a slow
worker (a busy node, a slower CPU) takes fewer chunks rather than holding the rest back.
A worker that dies mid-call, or does not answer a call within its deadline (a frozen
engine), is killed and replaced by a fresh one; the replacement first replays the pool's
"sticky" calls (the latest policy weights), then redoes the lost chunk: every item is answered
exactly once. Each replacement is recorded in `events` for the run's metrics. Workers are
spread over the cluster's nodes; the pool can grow or shrink between calls (`resize`), and a
size the cluster cannot place is refused, naming what is missing.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from tqdm import tqdm

WORKER_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


class PoolError(RuntimeError):
    """The pool cannot do what was asked (too many replacements, a size the cluster cannot place)."""


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous, order-preserving shards whose sizes differ by at most one (no empty shards)."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    shards, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        shards.append(items[start:end])
        start = end
    return shards


class WorkerPool:
    def __init__(self, worker_class: type, init_args: tuple, size: int, *, num_cpus: float,
                 num_gpus: float, max_replacements: int, name: str, env: dict[str, str] | None = None,
                 chunks_per_worker: int = 1, call_timeout_s: float | None = None,
                 start_timeout_s: float | None = None):
        """chunks_per_worker: with several workers, map cuts its items into this many chunks per
        worker (more chunks balance uneven workers better; fewer keep each call's batch large).
        call_timeout_s: a worker that has not answered one call (a chunk, a broadcast) by then is
        treated as lost; start_timeout_s: how long a new worker may take to be ready. None: no deadline."""
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "scheduling_strategy": "SPREAD"}
        if env:
            options["runtime_env"] = {"env_vars": env}
        self._remote_class = ray.remote(worker_class).options(**options)
        self._init_args = init_args
        self.name = name
        self.max_replacements = max_replacements
        self.replacements = 0
        self.chunks_per_worker = chunks_per_worker
        self.call_timeout_s, self.start_timeout_s = call_timeout_s, start_timeout_s
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.events: list[str] = []  # replacements since the driver last took them (take_events)
        self._sticky: dict[str, tuple] = {}
        self.workers: list = []
        self.nodes: list[str] = []  # the Ray node of each worker
        self.last_map: dict[str, list] = {}  # items and busy seconds per worker in the last map
        self.resize(size)

    def __len__(self) -> int:
        return len(self.workers)

    def _start_worker(self):
        worker = self._remote_class.remote(*self._init_args)
        for method, args in self._sticky.items():
            getattr(worker, method).remote(*args)  # actor calls run in order: before any later call
        return worker

    def take_events(self) -> list[str]:
        events, self.events = self.events, []
        return events

    def _ready(self, workers: list) -> list[str]:
        """The node of each worker once it is ready; a worker not ready by start_timeout_s is killed."""
        try:
            return ray.get([worker.ready.remote() for worker in workers], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            for worker in workers:
                ray.kill(worker)
            raise PoolError(f"{self.name} workers were not ready within {self.start_timeout_s:g}s "
                            "(resources.worker_start_timeout_s)") from None

    def missing_resources(self, size: int) -> dict[str, float]:
        """What the cluster lacks, now, to run `size` workers: {resource: amount short}."""
        extra = size - len(self.workers)
        if extra <= 0:
            return {}
        free = ray.available_resources()
        needs = {"CPU": extra * self.num_cpus, "GPU": extra * self.num_gpus}
        return {kind: round(need - free.get(kind, 0.0), 3) for kind, need in needs.items()
                if need > free.get(kind, 0.0) + 1e-9}

    def resize(self, size: int) -> None:
        """Grow with fresh workers (they get the sticky state) or shrink by stopping the newest.
        A size the cluster has no room for is refused (PoolError naming what is missing), and the
        pool keeps its size."""
        if size < 1:
            raise ValueError(f"{self.name} pool needs at least one worker, got {size}")
        missing = self.missing_resources(size)
        if missing:
            raise PoolError(f"{size} {self.name} workers do not fit: the cluster is short of "
                            + ", ".join(f"{amount:g} {kind}" for kind, amount in missing.items()))
        started = []
        while len(self.workers) + len(started) < size:
            started.append(self._start_worker())
        if started:
            nodes = self._ready(started)
            self.workers += started
            self.nodes = self.nodes[:len(self.workers) - len(started)] + nodes
        while len(self.workers) > size:
            ray.kill(self.workers.pop())
            self.nodes.pop()

    def _replace(self, index: int, error: Exception, reason: str = "was lost") -> None:
        if self.replacements >= self.max_replacements:
            raise PoolError(
                f"{self.name} worker {index} {reason} and the pool already replaced "
                f"{self.replacements} workers (resources.max_worker_restarts)") from error
        self.replacements += 1
        event = f"{self.name} worker {index} {reason} ({type(error).__name__}): replaced, its work redone"
        self.events.append(event)
        print(f"[crowdless] {event}", flush=True)
        try:
            ray.kill(self.workers[index])  # SIGKILL: also ends a frozen (SIGSTOPped) process
        except Exception:  # already gone
            pass
        self.workers[index] = self._start_worker()
        self.nodes[index] = self._ready([self.workers[index]])[0]

    def map(self, method: str, items: list, *args: Any, progress: str | None = None) -> list:
        """worker.method(chunk, *args) over chunks of items, each idle worker pulling the next chunk;
        results in item order (each worker returns one result per item of its chunk)."""
        chunk_count = len(self.workers) * self.chunks_per_worker if len(self.workers) > 1 else 1
        chunks = split_evenly(items, chunk_count) if items else []
        results: list[list | None] = [None] * len(chunks)
        done_items, busy = [0] * len(self.workers), [0.0] * len(self.workers)
        pending: dict = {}  # ref -> (worker index, chunk index, start time)
        next_chunk = 0

        def give(worker: int, chunk: int) -> None:
            ref = getattr(self.workers[worker], method).remote(chunks[chunk], *args)
            pending[ref] = (worker, chunk, time.perf_counter())

        for worker in range(min(len(self.workers), len(chunks))):
            give(worker, next_chunk)
            next_chunk += 1
        bar = tqdm(total=len(items), desc=progress, unit="prompt", disable=progress is None, leave=False)
        while pending:
            oldest = min(pending, key=lambda ref: pending[ref][2])
            timeout = None
            if self.call_timeout_s is not None:
                timeout = max(0.0, pending[oldest][2] + self.call_timeout_s - time.perf_counter())
            done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not done:  # the oldest call is past its deadline: its worker hangs
                worker, chunk, _ = pending.pop(oldest)
                self._replace(worker, TimeoutError(f"{method} took over {self.call_timeout_s:g}s"),
                              reason="did not answer in time")
                give(worker, chunk)
                continue
            worker, chunk, started = pending.pop(done[0])
            try:
                results[chunk] = ray.get(done[0])
            except WORKER_LOST as error:
                self._replace(worker, error)
                give(worker, chunk)  # the replacement redoes the lost chunk
                continue
            done_items[worker] += len(chunks[chunk])
            busy[worker] += time.perf_counter() - started
            bar.update(len(chunks[chunk]))
            if next_chunk < len(chunks):
                give(worker, next_chunk)
                next_chunk += 1
        bar.close()
        self.last_map = {"items": done_items, "seconds": [round(b, 3) for b in busy]}
        return [item for chunk in results for item in chunk]

    def broadcast(self, method: str, *args: Any, sticky: bool = False, timeout_s: float | None = None) -> list:
        """Call method on every worker at once and wait for all; sticky calls are replayed on any
        future replacement. A worker lost, or not answering within timeout_s (default
        call_timeout_s), is replaced and its call made once more."""
        if sticky:
            self._sticky[method] = args
        timeout_s = timeout_s if timeout_s is not None else self.call_timeout_s
        refs = [getattr(worker, method).remote(*args) for worker in self.workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        results = []
        for index, ref in enumerate(refs):
            if ref not in ready:
                self._replace(index, ray.exceptions.GetTimeoutError(f"{method} passed {timeout_s:g}s"),
                              "did not answer in time")
            else:
                try:
                    results.append(ray.get(ref))
                    continue
                except WORKER_LOST as error:
                    self._replace(index, error, "was lost")
            # the replacement replays sticky calls itself
            results.append(ray.get(getattr(self.workers[index], method).remote(*args), timeout=timeout_s))
        return results

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
