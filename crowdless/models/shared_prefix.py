"""Forward passes that compute the tokens every row begins with once, not once per row.

Chat-templated rows all begin with the same system prompt and turn header: 24 of SmolLM2's
33 to 46 prompt tokens, about a quarter of a default prompt + answer row. The shared prefix
runs as one row, its key/value cache is repeated over the batch, and the rows' own tokens
run against it. Gradients flow back through the repeated cache, so training sees the same
graph as a full forward. Shapes: B rows, L tokens, right-padded.
"""

from __future__ import annotations

import torch

# Below this many tokens the extra forward call costs more than the positions it saves.
MIN_SHARED_TOKENS = 8


def shared_prefix_length(ids: torch.Tensor, limit: int) -> int:
    """How many leading tokens all rows of ids [B, L] have in common, at most `limit` (the
    caller's first position whose output it needs: the prefix itself yields no output);
    0 when that is too few to be worth sharing, or there is only one row."""
    if len(ids) < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0)
    shared = min(int(same.long().cumprod(dim=0).sum()), limit)
    return shared if shared >= MIN_SHARED_TOKENS else 0


def forward_sharing_prefix(model, ids: torch.Tensor, attention: torch.Tensor, prefix: int, **kwargs):
    """model(input_ids=ids, attention_mask=attention, **kwargs), for a decoder that takes a
    key/value cache (a Hugging Face causal LM or its base model), whose outputs cover
    positions prefix..L-1 only. prefix: from shared_prefix_length; 0 runs the rows whole."""
    if not prefix:
        return model(input_ids=ids, attention_mask=attention, **kwargs)
    if model.training and any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        # Hugging Face's checkpointed layers drop a key/value cache in training: the rows
        # would silently run without their prefix
        raise ValueError("a model training with gradient checkpointing cannot share a prefix: pass prefix=0")
    # the prefix's logits go unused: one position's, as an index (a slice would be strided)
    head = {"logits_to_keep": torch.tensor([prefix - 1], device=ids.device)} if "logits_to_keep" in kwargs else {}
    cache = model(input_ids=ids[:1, :prefix], attention_mask=attention[:1, :prefix], use_cache=True,
                  **head).past_key_values
    cache.batch_repeat_interleave(len(ids))
    return model(input_ids=ids[:, prefix:], attention_mask=attention, past_key_values=cache, use_cache=True,
                 **kwargs)

