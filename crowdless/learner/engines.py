"""The learner's models as DeepSpeed engines, and their full weights back out of them."""

from __future__ import annotations

import torch

from configs.schema import LearnerConfig
from crowdless.models.lora import add_lora, merged_state_dict

ZERO_BUCKET_ELEMENTS = 2 * 10**7  # ZeRO reduce / all-gather bucket size


def scalar_model(path: str, pad_id: int, attention: str, gradient_checkpointing: bool):
    """A reward or value model: the backbone at `path` with a scalar `score` head, in float32."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32, pad_token_id=pad_id, attn_implementation=attention
    )
    if not hasattr(model, "score"):
        raise ValueError(f"{path}: reward/value backbones need a `score` head (Llama, Qwen, GPT-2 ...)")
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def build_engine(model, learner: LearnerConfig, bf16: bool, lr: float, micro_batch: int):
    """A DeepSpeed engine training `model` (with LoRA adapters added first, learner.lora_rank)."""
    import deepspeed

    if learner.lora_rank:
        model = add_lora(model, learner.lora_rank, learner.lora_alpha, learner.lora_targets,
                         trainable=("score",))
        if learner.gradient_checkpointing:  # frozen embeddings: checkpointed blocks need a grad input
            model.enable_input_require_grads()

    ds_config = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": learner.max_grad_norm,
        "bf16": {"enabled": bf16},
        # DeepSpeed's default 5e8-element buckets cost GBs per engine, times three engines.
        "zero_optimization": {"stage": learner.zero_stage,
                              "reduce_bucket_size": ZERO_BUCKET_ELEMENTS,
                              "allgather_bucket_size": ZERO_BUCKET_ELEMENTS,
                              "stage3_prefetch_bucket_size": ZERO_BUCKET_ELEMENTS,
                              "stage3_param_persistence_threshold": 10**5},
        # A torch AdamW: DeepSpeed's CPU Adam would JIT-compile for ~85 s on first use.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    # fused: one pass over the weights per step (CPU and CUDA), where the per-op kernels make
    # about ten, and the multi-tensor ones hold a model-sized temporary per op.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=0.0, fused=True)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return engine


def full_state_dict(engine, learner: LearnerConfig) -> dict[str, torch.Tensor]:
    """Every weight of the engine's model, as transformers and vLLM load them (LoRA merged)."""
    if learner.zero_stage == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    if learner.lora_rank:
        return merged_state_dict(engine.module)
    # A copy per tensor: DeepSpeed's parameters are views into one flat buffer, which the
    # next step overwrites under a caller that holds the state, and a view pickled as a
    # torch tensor carries the whole buffer.
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in engine.module.state_dict().items()}
