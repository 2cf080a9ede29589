"""WorkerPool: N Ray actors of one worker class, work pulled in chunks, failures redone.

`map` cuts the items into chunks and every idle worker pulls the next one, so a slow
worker (a busy node, a slower CPU) takes fewer chunks rather than holding the rest back.
A worker that dies mid-call is replaced by a fresh one; the replacement first replays the
pool's "sticky" calls (the latest policy weights), then redoes the dead worker's chunk:
every item is answered exactly once. Workers are spread over the cluster's nodes; the pool
can grow or shrink between calls (`resize`).
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from tqdm import tqdm

WORKER_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


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
                 chunks_per_worker: int = 1):
        """chunks_per_worker: with several workers, map cuts its items into this many chunks per
        worker (more chunks balance uneven workers better; fewer keep each call's batch large)."""
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "scheduling_strategy": "SPREAD"}
        if env:
            options["runtime_env"] = {"env_vars": env}
        self._remote_class = ray.remote(worker_class).options(**options)
        self._init_args = init_args
        self.name = name
        self.max_replacements = max_replacements
        self.replacements = 0
        self.chunks_per_worker = chunks_per_worker
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

    def resize(self, size: int) -> None:
        """Grow with fresh workers (they get the sticky state) or shrink by stopping the newest."""
        if size < 1:
            raise ValueError(f"{self.name} pool needs at least one worker, got {size}")
        while len(self.workers) < size:
            self.workers.append(self._start_worker())
        while len(self.workers) > size:
            ray.kill(self.workers.pop())
        self.nodes = ray.get([worker.ready.remote() for worker in self.workers])

    def _replace(self, index: int, error: Exception) -> None:
        if self.replacements >= self.max_replacements:
            raise RuntimeError(
                f"{self.name} worker {index} failed and the pool already replaced "
                f"{self.replacements} workers (resources.max_worker_restarts)") from error
        self.replacements += 1
        print(f"[crowdless] {self.name} worker {index} was lost ({type(error).__name__}); "
              "starting a replacement and redoing its share", flush=True)
        try:
            ray.kill(self.workers[index])
        except Exception:  # already gone
            pass
        self.workers[index] = self._start_worker()
        self.nodes[index] = ray.get(self.workers[index].ready.remote())

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
            [done], _ = ray.wait(list(pending), num_returns=1)
            worker, chunk, started = pending.pop(done)
            try:
                results[chunk] = ray.get(done)
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

    def broadcast(self, method: str, *args: Any, sticky: bool = False) -> list:
        """Call method on every worker; sticky calls are replayed on any future replacement."""
        if sticky:
            self._sticky[method] = args
        results = []
        for index in range(len(self.workers)):
            try:
                results.append(ray.get(getattr(self.workers[index], method).remote(*args)))
            except WORKER_LOST as error:
                self._replace(index, error)  # the replacement replays sticky calls itself
                results.append(ray.get(getattr(self.workers[index], method).remote(*args)))
        return results

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
