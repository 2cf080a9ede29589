"""Where the ranks of a torch.distributed group meet: a free port on rank 0's node, then the group.

A learner group (cluster/learner_group.py) picks rank 0's address inside rank 0's placement
bundle with `free_address` and hands it to every rank; each rank calls `init_process_group`.
A worker alone needs no Ray: it meets itself on a free local port.
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def free_address() -> tuple[str, int]:
    """This Ray node's address and a free TCP port: rank 0's rendezvous, picked where rank 0 runs."""
    import ray

    return ray.util.get_node_ip_address(), free_port()


def init_process_group(use_cuda: bool, rank: int, world_size: int, address: tuple[str, int] | None) -> None:
    """DeepSpeed needs a process group even for one process: gloo on CPU, nccl on GPU."""
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        return
    host, port = address or ("127.0.0.1", free_port())
    # one GPU per rank: Ray sets CUDA_VISIBLE_DEVICES, so each rank's device is its cuda:0
    os.environ.update({"MASTER_ADDR": host, "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": "0", "WORLD_SIZE": str(world_size)})
    deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
