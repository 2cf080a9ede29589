"""WorkerPool: N Ray actors of one worker class, work split across them, failures redone.

A worker that dies mid-call is replaced by a fresh one; the replacement first
replays the pool's "sticky" calls (the latest policy weights), then redoes the
dead worker's share. The pool can grow or shrink between calls (`resize`).
"""

from __future__ import annotations

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
                 num_gpus: float, max_replacements: int, name: str, env: dict[str, str] | None = None):
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        if env:
            options["runtime_env"] = {"env_vars": env}
        self._remote_class = ray.remote(worker_class).options(**options)
        self._init_args = init_args
        self.name = name
        self.max_replacements = max_replacements
        self.replacements = 0
        self._sticky: dict[str, tuple] = {}
        self.workers: list = []
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
        ray.get([worker.ready.remote() for worker in self.workers])

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

    def map(self, method: str, items: list, *args: Any, progress: str | None = None) -> list:
        """Split items across workers, call worker.method(shard, *args), return results in item order.
        Each worker returns one result per item of its shard."""
        shards = split_evenly(items, len(self.workers))
        pending = {getattr(self.workers[i], method).remote(shard, *args): i for i, shard in enumerate(shards)}
        results: list[list | None] = [None] * len(shards)
        bar = tqdm(total=len(items), desc=progress, unit="prompt", disable=progress is None, leave=False)
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done)
            try:
                results[index] = ray.get(done)
                bar.update(len(shards[index]))
            except WORKER_LOST as error:
                self._replace(index, error)
                pending[getattr(self.workers[index], method).remote(shards[index], *args)] = index
        bar.close()
        return [item for shard in results for item in shard]

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
