"""Moving new policy weights from the learner into running rollout engines.

One place for it: the learner publishes a state dict, the driver puts it in
Ray's object store once, and every RolloutWorker writes it to a local
safetensors file (under /dev/shm where it fits), reloads its engine from that file and
removes it: /dev/shm is memory, and a file left behind by each process is memory lost. A GPU
NCCL broadcast would replace `write_weights_file` + reload with a collective.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch


def weights_dir(size_bytes: int) -> Path:
    """/dev/shm where it has room for the file (containers often mount only 64 MB there),
    else the temporary directory on disk."""
    shm = Path("/dev/shm")
    fits = shm.is_dir() and shutil.disk_usage(shm).free > 2 * size_bytes  # the staging copy, then the file
    path = (shm if fits else Path(tempfile.gettempdir())) / f"crowdless-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_weights_file(state_dict: dict[str, torch.Tensor], tied_embeddings: bool) -> Path:
    """Safetensors file of the policy's weights; a tied lm_head is left out (the engine ties it)."""
    from safetensors.torch import save_file

    tensors = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in state_dict.items()
        if not (tied_embeddings and name == "lm_head.weight")
    }
    path = weights_dir(sum(t.numel() * t.element_size() for t in tensors.values())) / "policy.safetensors"
    staging = path.with_suffix(".tmp")
    save_file(tensors, str(staging))
    staging.replace(path)
    return path


def remove_weights_file(path: Path) -> None:
    """Once the engine holds the weights, the file (and its per-process folder) is not needed."""
    shutil.rmtree(path.parent, ignore_errors=True)


class VllmWeightSync:
    """vLLM worker extension (`LLM(worker_extension_cls=...)`): reload weights from a file.

    Tensors cannot travel as collective_rpc arguments (they arrive as lists), and the
    CPU backend repacks weights, so `reload_weights` with an iterator is the path that works.
    """

    def reload_weights_from_file(self, path: str) -> None:
        from safetensors.torch import load_file

        self.model_runner.reload_weights(weights_iterator=iter(load_file(path).items()))
        # vLLM's CPU backend computes logits with a packed copy of the lm_head (the tied
        # embedding) made at load time, and the in-place reload leaves that copy stale
        # (verified: new norms and projections are used, new embeddings are not). Repack it.
        model = self.model_runner.get_model()
        lm_head = getattr(model, "lm_head", None)
        method = getattr(lm_head, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(lm_head)
