"""Nucleus (top-p) sampling's mask without sorting the vocabulary, and its install into vLLM.

vLLM's CPU sampler applies top-p by sorting every row's logits over the whole vocabulary: for
SmolLM2 (49,152 tokens) at 64 sequences that sort takes about 125 ms of each decode step on a
2-core CPU, more than the model's own forward, and a rollout spends about 40% of its time in it
(bench_rollout with top_p 0.95 against 1.0). The nucleus itself is small: at temperature 0.8 and
p 0.95 it is tens of tokens. So the rows' largest `candidates` logits (`torch.topk`, about 6 ms)
decide it exactly whenever their probability mass reaches p; a row whose nucleus is wider than
that falls back to the full sort.

Kept tokens are vLLM's: in descending order of logit, token j stays iff the probability mass of
the tokens before it is below p (so the first always stays). Only float rounding at the boundary
and ties in the boundary logit can differ from the sorting implementation, and, on a row with
p = 1, tokens whose probability underflows to zero: vLLM masks them, this keeps them, and no
draw picks them either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CANDIDATES = 256  # covers the nucleus of nearly every row at the paper's temperature 0.8 / top-p 0.95


def apply_top_p(logits: torch.Tensor, p: torch.Tensor, fallback: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                candidates: int = CANDIDATES) -> torch.Tensor:
    """Set every logit outside its row's nucleus to -inf, in place, and return the logits.

    logits: [rows, vocab], already divided by the temperature; p: [rows], each in (0, 1].
    fallback(logits_rows, p_rows): the sorting implementation, for rows whose nucleus holds more
    than `candidates` tokens."""
    candidates = min(candidates, logits.shape[1])
    top = logits.topk(candidates, dim=1).values  # [rows, candidates], descending
    probs = (top - logits.logsumexp(dim=1, keepdim=True)).exp()
    mass_before = probs.cumsum(dim=1) - probs  # each candidate's exclusive cumulative probability
    kept = (mass_before < p.unsqueeze(1)).sum(dim=1)  # >= 1: the first candidate's mass before is 0
    keeps_all = p >= 1.0
    decided = (kept < candidates) | keeps_all
    threshold = top.gather(1, (kept - 1).unsqueeze(1))
    threshold[keeps_all] = -float("inf")
    logits.masked_fill_(decided.unsqueeze(1) & (logits < threshold), -float("inf"))
    wide = (~decided).nonzero().squeeze(1)
    if wide.numel():
        logits[wide] = fallback(logits[wide], p[wide])
    return logits


def install_in_vllm() -> bool:
    """Replace vLLM's CPU top-k/top-p function with one that takes top-p through `apply_top_p`
    (vLLM's own function keeps every case with a top-k). Returns whether it was installed: only
    on the CPU platform, and only where vLLM has the function this wraps (a vLLM that renamed it
    keeps its own sampler)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    try:
        from vllm.v1.sample.ops import topk_topp_sampler as sampler_ops
    except ImportError:
        return False
    original = getattr(sampler_ops, "apply_top_k_top_p", None)
    sort_based = getattr(sampler_ops, "apply_top_k_top_p_pytorch", None)
    if original is None or sort_based is None or getattr(original, "crowdless", False):
        return False

    def apply_top_k_top_p(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
        if k is not None or p is None:
            return original(logits, k, p)
        return apply_top_p(logits, p, fallback=lambda rows, row_p: sort_based(rows, None, row_p))

    apply_top_k_top_p.crowdless = True
    sampler_ops.apply_top_k_top_p = apply_top_k_top_p
    return True


def register_vllm_plugin() -> None:
    """vLLM's general-plugin hook (pyproject's `vllm.general_plugins` entry point): vLLM calls it
    in every process that runs an engine, the engine-core and worker processes included."""
    install_in_vllm()
