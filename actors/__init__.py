"""Workers Ray hosts: plain classes, wrapped with ray.remote in cluster/ (resources from config)."""

import os


def use_all_cores() -> None:
    """Ray sets OMP_NUM_THREADS to an actor's CPU share (often 1); the phases of an iteration
    run one after another, so each worker may use every core it can see while it works."""
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
