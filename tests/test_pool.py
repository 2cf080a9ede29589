"""WorkerPool on a real local Ray cluster: order, sharding, resize, and a lost worker's work redone."""

import os
import signal
import time

import pytest

from cluster.pool import PoolError, WorkerPool, split_evenly

pytestmark = pytest.mark.ray


class EchoWorker:
    """Doubles items; dies (exits its process) on the item 'die' unless marker file exists."""

    def __init__(self, marker: str):
        self.marker = marker
        self.offset = 0
        self.delay = 0.0

    def ready(self):
        return True

    def set_offset(self, offset):
        self.offset = offset

    def set_delay(self, seconds):
        self.delay = seconds

    def double(self, items):
        if "die" in items and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        if "freeze" in items and not os.path.exists(self.marker):  # a hung engine: alive, never answers
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(self.delay)
        return [item if item in ("die", "freeze") else item * 2 + self.offset for item in items]

    def pid(self):
        return os.getpid()


@pytest.mark.unit
def test_split_evenly():
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 4) == [[1]]
    assert sum(split_evenly(list(range(10)), 4), []) == list(range(10))


def test_map_resize_and_replacement(ray_local, tmp_path):
    pool = WorkerPool(EchoWorker, (str(tmp_path / "died"),), 2, num_cpus=0.1, num_gpus=0,
                      max_replacements=1, name="echo")
    assert pool.map("double", list(range(5))) == [0, 2, 4, 6, 8]
    pool.broadcast("set_offset", 100, sticky=True)
    assert pool.map("double", [1, 2]) == [102, 104]
    pool.resize(3)
    assert len(pool) == 3 and pool.map("double", [1, 2, 3]) == [102, 104, 106]  # newcomer got the sticky offset
    pool.resize(1)
    assert len(pool) == 1
    pool.resize(2)
    # a worker dies mid-call: it is replaced, gets the sticky state, and its share is redone
    assert pool.map("double", [1, "die", 3, 4]) == [102, "die", 106, 108]
    assert pool.replacements == 1
    (tmp_path / "died").unlink()
    with pytest.raises(RuntimeError, match="max_worker_restarts"):
        pool.map("double", ["die", 1])
    pool.shutdown()


def test_idle_workers_pull_the_next_chunk(ray_local, tmp_path):
    """A slow worker does not hold the rest back: the fast one pulls most chunks, every item is
    answered once and in order, and the pool reports the items and busy seconds per worker."""
    pool = WorkerPool(EchoWorker, (str(tmp_path / "died"),), 2, num_cpus=0.1, num_gpus=0,
                      max_replacements=1, name="echo", chunks_per_worker=4)
    import ray

    ray.get(pool.workers[0].set_delay.remote(1.0))
    assert pool.map("double", list(range(16))) == [2 * i for i in range(16)]
    slow, fast = pool.last_map["items"]
    assert slow + fast == 16 and fast >= 3 * slow and slow >= 2  # 8 chunks of 2: the slow one took 1 or 2
    assert pool.last_map["seconds"][0] >= 1.0 and len(pool.nodes) == 2
    # a worker lost mid-map: its chunk is redone by the replacement, nothing answered twice
    assert pool.map("double", [1, 2, "die", 4, 5, 6, 7, 8]) == [2, 4, "die", 8, 10, 12, 14, 16]
    assert sum(pool.last_map["items"]) == 8 and pool.replacements == 1
    pool.shutdown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = open(f"/proc/{pid}/status").read() if os.path.exists(f"/proc/{pid}/status") else ""
    return "zombie" not in status


def test_a_frozen_worker_is_killed_replaced_and_its_chunk_redone(ray_local, tmp_path):
    """The drill of a hung engine: a worker stopped with SIGSTOP mid-call never answers; past the
    deadline the pool kills it, starts a replacement with the sticky state, and redoes its chunk."""
    import ray

    pool = WorkerPool(EchoWorker, (str(tmp_path / "froze"),), 2, num_cpus=0.1, num_gpus=0,
                      max_replacements=2, name="echo", chunks_per_worker=2, call_timeout_s=5.0,
                      start_timeout_s=60.0)
    pool.broadcast("set_offset", 100, sticky=True)
    pids = ray.get([worker.pid.remote() for worker in pool.workers])
    started = time.perf_counter()
    assert pool.map("double", [1, 2, "freeze", 4]) == [102, 104, "freeze", 108]
    assert 5.0 <= time.perf_counter() - started < 60
    assert pool.replacements == 1 and sum(pool.last_map["items"]) == 4
    [event] = pool.take_events()
    assert "did not answer in time" in event and pool.take_events() == []
    for _ in range(30):  # Ray's kill ends a frozen process after its grace period (about 6 s here)
        if sum(_alive(pid) for pid in pids) == 1:
            break
        time.sleep(1)
    assert sum(_alive(pid) for pid in pids) == 1  # the frozen process is gone, not left behind
    # a frozen worker does not hold a broadcast either
    (tmp_path / "froze").unlink()
    worker = pool.workers[0]
    worker.double.remote(["freeze"])  # freezes it
    time.sleep(1)
    assert pool.broadcast("set_offset", 7, sticky=True, timeout_s=3.0) == [None, None]
    assert pool.replacements == 2 and pool.map("double", [1, 2]) == [9, 11]
    pool.shutdown()


def test_a_size_the_cluster_cannot_place_is_refused(ray_local, tmp_path):
    pool = WorkerPool(EchoWorker, (str(tmp_path / "x"),), 1, num_cpus=0.5, num_gpus=0,
                      max_replacements=0, name="echo", start_timeout_s=60.0)
    with pytest.raises(PoolError, match=r"20 echo workers do not fit: the cluster is short of [0-9.]+ CPU"):
        pool.resize(20)
    assert len(pool) == 1 and pool.map("double", [3]) == [6]
    pool.shutdown()


def test_a_learner_style_wait_gives_up_at_its_deadline(ray_local):
    """wait_all (the learner group's wait) raises CallTimedOut naming the calls still running."""
    import ray

    from cluster.calls import CallTimedOut, wait_all

    @ray.remote(num_cpus=0.1)
    def answer(seconds):
        time.sleep(seconds)
        return seconds

    assert wait_all([answer.remote(0), answer.remote(0.5)], timeout_s=30) == [0, 0.5]
    started = time.perf_counter()
    with pytest.raises(CallTimedOut) as late:
        wait_all([answer.remote(0), answer.remote(60)], timeout_s=2)
    assert late.value.indices == [1] and time.perf_counter() - started < 10
