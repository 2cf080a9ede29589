"""Moving new policy weights from the learner into running rollout engines.

One place for it: the learner publishes a state dict (as numpy arrays, `portable_state`), the
driver hands Ray's object store reference to every RolloutWorker, and each writes it to a local
safetensors file (under /dev/shm where it fits), reloads its engine from that file and
removes it: /dev/shm is memory, and a file left behind by each process is memory lost. A GPU
NCCL broadcast would replace `write_weights_file` + reload with a collective.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

# A state dict as it travels through Ray's object store: name -> (torch dtype name, array). Ray
# stores numpy arrays as raw buffers and hands readers views of the store's memory, where torch
# tensors are pickled into bytes and unpickled into new tensors: for SmolLM2-135M in bf16 on 2
# cores, 0.1 s from learner to rollout worker against 1 to 3 s.
PortableState = dict[str, tuple[str, np.ndarray]]


def portable_state(state_dict: dict[str, torch.Tensor]) -> PortableState:
    """The state dict as numpy arrays; numpy has no bfloat16, so 16-bit floats travel as their bits."""
    portable = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        bits = tensor.view(torch.int16) if tensor.dtype in (torch.bfloat16, torch.float16) else tensor
        portable[name] = (str(tensor.dtype).removeprefix("torch."), bits.numpy())
    return portable


def torch_state(state: PortableState | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a portable state (a plain state dict passes through). They share the arrays'
    memory, which Ray's object store hands out read-only: read them, copy them, never write."""
    import warnings

    with warnings.catch_warnings():  # torch warns once that the arrays it wraps are read-only
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return {name: value if isinstance(value, torch.Tensor)
                else torch.from_numpy(value[1]).view(getattr(torch, value[0]))
                for name, value in state.items()}


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
