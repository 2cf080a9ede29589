import math

import pytest
import torch

from algos.losses import (compute_gae, forward_kl, kl_shaped_rewards, masked_whiten, pairwise_reward_loss,
                          policy_loss, value_loss)

pytestmark = pytest.mark.unit


def _gae_loop(rewards, values, length, gamma, lam):
    """Textbook GAE on one unpadded sequence."""
    advantages = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0), (1.0, 0.0)])
def test_gae_matches_simple_loop_with_padding(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    lengths = [7, 5, 1, 3]
    mask = torch.zeros(4, 7)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    advantages, returns = compute_gae(rewards * mask, values * mask, mask, gamma, lam)
    for row, length in enumerate(lengths):
        expected = _gae_loop(rewards[row].tolist(), values[row].tolist(), length, gamma, lam)
        assert advantages[row, :length].tolist() == pytest.approx(expected, abs=1e-5)
        assert advantages[row, length:].abs().sum() == 0
        assert returns[row, :length].tolist() == pytest.approx(
            [a + v for a, v in zip(expected, values[row, :length].tolist())], abs=1e-5)


def test_gae_hand_case():
    # two steps, gamma = lam = 1: A_1 = r_1 - V_1, A_0 = r_0 + V_1 - V_0 + A_1 = r_0 + r_1 - V_0
    advantages, _ = compute_gae(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.25]]),
                                torch.ones(1, 2), 1.0, 1.0)
    assert advantages.tolist() == [[2.5, 1.75]]


def test_token_and_sequence_kl_rewards():
    scores = torch.tensor([1.0, -2.0])
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    token, metrics = kl_shaped_rewards(scores, logprobs, ref, mask, kl_coef=0.5, mode="token")
    # row 0: log ratios 0.5, -1.0 -> -0.25, +0.5 + score 1 on the last real token
    assert token.tolist() == [[-0.25, 1.5, 0.0], [-2.0, 0.0, 0.0]]
    sequence, _ = kl_shaped_rewards(scores, logprobs, ref, mask, kl_coef=0.5, mode="sequence")
    assert sequence.tolist() == [[0.0, 1.25, 0.0], [-2.0, 0.0, 0.0]]
    assert token.sum(1).tolist() == pytest.approx(sequence.sum(1).tolist())
    # k3 = exp(d) - d - 1 per token, d = ref - logprob: row 0 d = -0.5, 1.0
    k3_row0 = (math.exp(-0.5) + 0.5 - 1) + (math.exp(1.0) - 1.0 - 1)
    assert metrics["kl"] == pytest.approx(k3_row0 / 2)
    with pytest.raises(ValueError):
        kl_shaped_rewards(scores, logprobs, ref, mask, 0.5, mode="bogus")


def test_kl_is_zero_for_identical_policies_and_non_negative():
    g = torch.Generator().manual_seed(1)
    logprobs = -torch.rand(3, 5, generator=g)
    mask = torch.ones(3, 5)
    _, same = kl_shaped_rewards(torch.zeros(3), logprobs, logprobs, mask, 0.1)
    assert same["kl"] == 0.0
    _, other = kl_shaped_rewards(torch.zeros(3), logprobs, -torch.rand(3, 5, generator=g), mask, 0.1)
    assert other["kl"] > 0


def test_policy_loss_hand_cases():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    advantages = torch.tensor([[1.0, -1.0]])
    # ratio 1: loss = -mean(A) = 0
    loss, metrics = policy_loss(old.clone(), old, advantages, mask, 0.2)
    assert loss.item() == pytest.approx(0.0) and metrics["clipfrac"] == 0
    # ratio e^1 ~ 2.718 on both: A=+1 clipped to 1.2; A=-1 keeps -2.718 (min picks the worse)
    loss, metrics = policy_loss(torch.ones(1, 2), old, advantages, mask, 0.2)
    assert loss.item() == pytest.approx(-(1.2 - math.e) / 2, abs=1e-5)
    assert metrics["clipfrac"] == 1.0


def test_policy_loss_gradient_vanishes_when_clipped():
    logprobs = torch.tensor([[1.0]], requires_grad=True)
    loss, _ = policy_loss(logprobs, torch.zeros(1, 1), torch.tensor([[1.0]]), torch.ones(1, 1), 0.2)
    loss.backward()
    assert logprobs.grad.item() == 0.0


def test_value_loss_hand_case():
    values, old, returns = torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[3.0]])
    loss, _ = value_loss(values, old, returns, torch.ones(1, 1), value_clip=0.5)
    # unclipped (2-3)^2 = 1, clipped V=0.5: (0.5-3)^2 = 6.25 -> 0.5 * 6.25
    assert loss.item() == pytest.approx(3.125)


def test_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = masked_whiten(x, mask)
    assert white[0, 3] == 0
    assert white[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert white[0, :3].pow(2).mean().item() == pytest.approx(1.0, abs=1e-4)


def test_pairwise_reward_loss():
    loss, metrics = pairwise_reward_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.exp(1)))) / 2
    assert loss.item() == pytest.approx(expected)
    assert metrics["rm_accuracy"] == 0.5


def test_forward_kl_by_hand_zero_at_the_reference_and_it_pulls_back_what_the_policy_dropped():
    ref = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]]]))
    policy = torch.log(torch.tensor([[[0.25, 0.25, 0.5], [0.9, 0.05, 0.05]]])).requires_grad_()
    kl = forward_kl(ref, policy, torch.tensor([[1.0, 1.0]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5)  # sum_v p_ref log(p_ref / pi)
    assert kl[0, 0].item() == pytest.approx(expected) and kl[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert forward_kl(ref, policy, torch.tensor([[1.0, 0.0]]))[0, 1] == 0  # padding
    kl.sum().backward()
    # d/d log pi(v) = -p_ref(v): descent raises every token the reference gives mass, most the
    # one the policy dropped relative to it once renormalised (here token 0)
    assert torch.allclose(policy.grad[0, 0], -ref.exp()[0, 0])
    at_reference = ref.clone().requires_grad_()
    logdists = torch.log_softmax(at_reference, dim=-1)
    forward_kl(ref, logdists, torch.ones(1, 2)).sum().backward()
    assert torch.allclose(at_reference.grad, torch.zeros_like(ref), atol=1e-7)  # no pull at pi = pi_ref
