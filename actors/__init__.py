"""Workers Ray hosts: plain classes, wrapped with ray.remote in cluster/ (resources from config)."""

import os


def start_worker_process(name: str, threads: int | None = None) -> None:
    """First thing a worker does: its output to the run's log file (when the driver set one),
    and its torch threads: `threads` where workers run side by side (the ranks of a learner
    group), else every core it can see. Ray sets OMP_NUM_THREADS to an actor's CPU share
    (often 1); the phases of an iteration run one after another, so each may use them all."""
    import torch

    from cluster.console import capture_worker_output

    capture_worker_output(name)
    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))


def node_id() -> str:
    """The Ray node this worker runs on ("" outside Ray): every worker's `ready()` answer."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
