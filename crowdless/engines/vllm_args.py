"""vLLM engine arguments, one place for rollout workers, Serve replicas, evaluation and benchmarks.

Memory is sized in absolute bytes on CPU. vLLM's CPU backend reads `gpu_memory_utilization`
as a share of the NUMA node's memory and subtracts the worker's own RSS from it; nodes
of one machine kind report anything from 3 to 24 GiB, so a share that fits on one leaves
no KV cache on another. The KV cache is therefore an explicit size derived from the work:

    kv_bytes = sequences in flight x max_model_len x KV bytes per token x KV_HEADROOM
    KV bytes per token = 2 (K and V) x layers x kv_heads x head_dim x dtype bytes

(`rollout.kv_cache_gib` sets it by hand). On a GPU the utilisation share stays: there
the device memory is the engine's alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from configs.schema import ConfigError, ModelConfig, RolloutConfig
from crowdless.models.loading import resolve_dtype

GIB = 1024**3
KV_HEADROOM = 1.25  # block rounding and the scheduler's slack
CPU_STEP_TOKENS = 4096  # vLLM's own default token budget per engine step on CPU
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def kv_bytes_per_token(model_config, dtype: str) -> int:
    """2 x layers x kv_heads x head_dim x bytes, from a transformers config."""
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    return 2 * model_config.num_hidden_layers * kv_heads * head_dim * _DTYPE_BYTES[dtype]


def kv_cache_bytes(rollout: RolloutConfig, bytes_per_token: int, sequences: int) -> int:
    """The KV cache one engine gets: rollout.kv_cache_gib, or derived from the sequences it
    decodes at once (at least one sequence of max_model_len)."""
    if rollout.kv_cache_gib is not None:
        return int(rollout.kv_cache_gib * GIB)
    return math.ceil(max(1, sequences) * rollout.max_model_len * bytes_per_token * KV_HEADROOM)


def node_available_bytes(node: int = 0) -> int:
    """Memory vLLM's CPU backend may take for its KV cache: the NUMA node's free plus
    reclaimable file pages, as vLLM itself counts them; the whole host where there is no node."""
    meminfo = Path(f"/sys/devices/system/node/node{node}/meminfo")
    if not meminfo.exists():
        import psutil

        return int(psutil.virtual_memory().available)
    fields = {}
    for line in meminfo.read_text().splitlines():
        parts = line.split()  # "Node 0 MemFree:  5209412 kB"
        fields[parts[2].rstrip(":")] = int(parts[3]) * 1024
    return fields["MemFree"] + fields.get("Active(file)", 0) + fields.get("Inactive(file)", 0)


def check_kv_cache_fits(needed: int, available: int, key: str = "rollout.kv_cache_gib") -> None:
    if needed > available:
        raise ConfigError(
            f"{key}: the vLLM KV cache needs {needed / GIB:.2f} GiB but this machine's memory node has "
            f"{available / GIB:.2f} GiB available; set {key} lower (or rollout.max_model_len, or fewer "
            "sequences per engine), or free memory")


def vllm_engine_args(model_path: str, model: ModelConfig, rollout: RolloutConfig, seed: int,
                     sequences: int, on_gpu: bool | None = None) -> dict:
    """Keyword arguments for `vllm.LLM` / `AsyncEngineArgs`. `sequences`: how many sequences the
    engine decodes at once (vLLM's max_num_seqs); on CPU it sizes the KV cache, which is checked
    against the memory available now so a machine that cannot hold it fails naming the key."""
    from transformers import AutoConfig

    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    args = {
        "model": model_path,
        "dtype": resolve_dtype(model.dtype),
        "seed": seed,
        "enforce_eager": rollout.enforce_eager,
        "max_model_len": rollout.max_model_len,
        "max_num_seqs": max(1, sequences),
        "worker_extension_cls": "cluster.weight_sync.VllmWeightSync",
    }
    if not on_gpu:
        # vLLM splits a prefill over steps once a step's prompt tokens pass its budget, then rewinds
        # the seeded generator of the split request, which a CPU generator cannot do (the engine
        # dies: "CPU Generator does not use offset"). Whole prompts per step avoid the split.
        args["enable_chunked_prefill"] = False
        args["max_num_batched_tokens"] = max(CPU_STEP_TOKENS, rollout.max_model_len)
    if on_gpu and rollout.kv_cache_gib is None:
        args["gpu_memory_utilization"] = rollout.memory_utilization
        return args
    per_token = kv_bytes_per_token(AutoConfig.from_pretrained(model_path), resolve_dtype(model.dtype))
    needed = kv_cache_bytes(rollout, per_token, sequences)
    if not on_gpu:
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):  # vLLM would silently replace our size with it
            raise ConfigError("VLLM_CPU_KVCACHE_SPACE is set and would override rollout.kv_cache_gib: "
                              "unset it and set rollout.kv_cache_gib instead")
        check_kv_cache_fits(needed, node_available_bytes())
    args["kv_cache_memory_bytes"] = needed
    return args

