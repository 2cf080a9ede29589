"""Top-p without sorting the vocabulary keeps exactly the tokens vLLM's sorting sampler keeps."""

from __future__ import annotations

import pytest
import torch

from crowdless.engines.nucleus import apply_top_p

sort_ops = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")


def sorted_top_p(logits, p):
    return sort_ops.apply_top_k_top_p_pytorch(logits, None, p)


def kept(logits):
    return logits > -float("inf")


def test_apply_top_p_keeps_vllms_nucleus_in_every_row():
    generator = torch.Generator().manual_seed(0)
    vocab = 4096
    # rows from flat (a nucleus thousands wide) to peaked (one token holds the mass)
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0, 16.0] * 4).unsqueeze(1)
    logits = torch.randn(len(scales), vocab, generator=generator) * scales
    p = torch.tensor([0.95, 0.5, 0.9, 0.99, 1.0, 0.3] * 4)
    fallen_back = []

    def fallback(rows, row_p):
        fallen_back.append(len(rows))
        return sorted_top_p(rows, row_p)

    ours = apply_top_p(logits.clone(), p, fallback, candidates=64)
    theirs = sorted_top_p(logits.clone(), p)
    assert torch.equal(kept(ours), kept(theirs))
    assert torch.equal(ours[kept(ours)], logits[kept(ours)])  # kept logits are unchanged
    sizes = kept(ours).sum(dim=1)
    assert sizes.min() == 1 and (sizes[p == 1.0] == vocab).all()
    assert sum(fallen_back) == int((sizes[p < 1] > 64).sum()) > 0  # wide nuclei took the sort, and only those


def test_apply_top_p_keeps_at_least_the_most_likely_token():
    logits = torch.tensor([[10.0, 0.0, -1.0, -2.0]])
    masked = apply_top_p(logits.clone(), torch.tensor([0.01]), sorted_top_p, candidates=2)
    assert kept(masked).tolist() == [[True, False, False, False]]


def test_the_plugin_replaces_vllms_cpu_top_p_and_keeps_top_k_cases():
    from importlib.metadata import entry_points

    from vllm.plugins import load_general_plugins

    names = {entry.name for entry in entry_points(group="vllm.general_plugins")}
    assert "crowdless-nucleus" in names  # installed with the package: every engine process loads it
    load_general_plugins()
    assert getattr(sort_ops.apply_top_k_top_p, "crowdless", False)
    logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([5, 5, 5])
    top_k = sort_ops.apply_top_k_top_p(logits.clone(), k, None)
    assert kept(top_k).sum(dim=1).tolist() == [5, 5, 5]
    p = torch.tensor([0.9, 0.5, 1.0])
    assert torch.equal(kept(sort_ops.apply_top_k_top_p(logits.clone(), None, p)), kept(sorted_top_p(logits.clone(), p)))
