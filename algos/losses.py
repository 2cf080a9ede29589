"""Token-level losses and estimators the objectives share (pure torch): masked mean and whitening,
the k3 KL estimate and KL-shaped rewards, GAE, PPO's clipped policy and value losses, and the
reward model's pairwise loss. Shapes: [B, T] over response tokens, mask 1 = real token.

References: Schulman et al. 2017 (clipped objective), Schulman et al. 2016 (GAE),
Ziegler et al. 2019 (per-token KL penalty to a reference policy), and the paper's
sequence-level form R(x, y) - beta * log(pi(y|x) / pi_ref(y|x)).
Each function returns (value, metrics) where metrics are plain floats.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real tokens; padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) [B, T]: exp(d) - d - 1, d = log pi_ref - log pi.

    Unbiased for the KL under samples from pi and never negative (Schulman 2020, "Approximating
    KL divergence"). d is clamped to [-20, 20] so one wild token cannot overflow; padding is 0.
    """
    d = torch.where(mask > 0, ref_logprobs - logprobs, torch.zeros_like(logprobs))
    d = d.clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1) * mask


def forward_kl(ref_logdists: torch.Tensor, logdists: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_ref || pi) over the whole vocabulary [B, T]: sum_v p_ref(v) (log p_ref(v) - log pi(v)),
    from both models' next-token log-distributions [B, T, V] at the same positions; padding is 0.

    Exact, where k3 estimates KL(pi || pi_ref) from the sampled token alone: it grows when the policy
    drops probability anywhere the reference put it (a reply's first word, where it ends), which a
    KL measured on the policy's own samples hardly sees. Its gradient is 0 at pi = pi_ref."""
    kl = (ref_logdists.exp() * (ref_logdists - logdists)).sum(dim=-1)
    return kl * mask


def kl_shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    mode: str = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token rewards [B, T] from sequence scores [B] and the KL to the reference.

    token:    r_t = -beta * (log pi - log pi_ref)_t, plus the score on the last real token.
    sequence: the paper's form: 0 everywhere, and on the last token
              score - beta * sum_t (log pi - log pi_ref)_t.
    Both give the same return per sequence; they differ in how credit spreads over tokens.
    Reported "kl" is the k3 estimator exp(d) - d - 1 with d = log pi_ref - log pi (always >= 0).
    """
    log_ratio = (logprobs - ref_logprobs) * mask
    last = mask.sum(dim=1).long() - 1  # index of the last real token
    rows = torch.arange(len(scores))
    if mode == "token":
        rewards = -kl_coef * log_ratio
        rewards[rows, last] += scores
    elif mode == "sequence":
        rewards = torch.zeros_like(log_ratio)
        rewards[rows, last] = scores - kl_coef * log_ratio.sum(dim=1)
    else:
        raise ValueError(f"unknown kl mode {mode!r}; expected 'token' or 'sequence'")
    k3 = kl_k3(logprobs, ref_logprobs, mask).sum(dim=1)
    metrics = {
        "kl": k3.mean().item(),
        "kl_k1": log_ratio.sum(dim=1).mean().item(),
        "score_mean": scores.mean().item(),
        "return_mean": (rewards * mask).sum(dim=1).mean().item(),
    }
    return rewards * mask, metrics


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded [B, T]. Returns (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t (V past the last real token is 0),
    A_t = delta_t + gamma * lam * A_{t+1}, returns = A + V.
    """
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        real = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * real
        # Padding passes nothing back: the next real step sees V = 0 and A = 0 beyond the end.
        next_value = torch.where(real > 0, values[:, t], torch.zeros_like(next_value))
        next_advantage = torch.where(real > 0, advantage, torch.zeros_like(next_advantage))
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate: -mean(min(rho A, clip(rho, 1-eps, 1+eps) A)), rho = pi / pi_old."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_ratio, 1 + clip_ratio) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((torch.abs(ratio - 1) > clip_ratio).float(), mask).item()
        approx_kl = masked_mean(old_logprobs - logprobs, mask).item()
    return loss, {"policy_loss": loss.item(), "clipfrac": clipfrac, "approx_kl": approx_kl}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    value_clip: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: 0.5 * mean(max((V - R)^2, (V_clipped - R)^2))."""
    clipped = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
    loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)
    return loss, {"value_loss": loss.item()}


def pairwise_reward_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley-Terry loss -mean(log sigmoid(r_w - r_l)) over pairs [P]; accuracy = P(r_w > r_l)."""
    margin = chosen_scores - rejected_scores
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    accuracy = (margin > 0).float().mean().item()
    return loss, {"rm_loss": loss.item(), "rm_accuracy": accuracy, "rm_margin": margin.mean().item()}
