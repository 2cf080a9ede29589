"""LoRA adapters in place, and the merged weights that transformers and vLLM load.

The adapters are injected into the model itself (peft's `inject_adapter_in_model`), so it keeps
its class and attributes (`base_model`, `score`) and the learner's forward code is unchanged.
Only the adapters, and heads named in `trainable` (the reward and value models' `score`),
train; everything else is frozen, which is what makes the optimizer step and the weight
gradients small. Checkpoints and weight syncs carry merged weights under the plain model's
names (W + B A * alpha / r), so nothing downstream knows adapters exist.
"""

from __future__ import annotations

import torch


def add_lora(model, rank: int, alpha: float, targets: list[str], trainable: tuple[str, ...] = ()):
    """Adapters of rank `rank` on the Linear layers whose names end in one of `targets`; returns
    the model (changed in place) with only the adapters and the `trainable` modules trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets,
                                               lora_dropout=0.0, bias="none"), model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = "lora_" in name or any(part in trainable for part in name.split("."))
    return model


def has_lora(model) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


@torch.no_grad()
def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under its names without adapters, each adapted weight W + B A * scale,
    as copies on the CPU (a copy per tensor: parameters may be views into a flat DeepSpeed buffer)."""
    from peft.tuners.lora import LoraLayer

    state = {key.replace(".base_layer.", "."): tensor.detach().to("cpu", copy=True)
             for key, tensor in model.state_dict().items() if ".lora_" not in key}
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            weight = layer.get_base_layer().weight
            state[f"{name}.weight"] = (weight + layer.get_delta_weight("default").to(weight.dtype)).cpu()
    return state
