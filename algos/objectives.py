"""Policy objectives, registered by name (pure torch), in the spirit of verl's core_algos.py.

The learner reads `policy.objective`, calls `get_objective(name)`, and follows what the returned
`Objective` says instead of branching per algorithm:

    kind "policy_gradient"   sample, score, then
        advantages, returns, metrics = objective.advantages(RolloutBatch(...), params)
        per minibatch:  loss, metrics = objective.loss(PolicyLossInputs(...), params)
        if objective.uses_value_model:
            v_loss, metrics = objective.value_loss(values, old_values, returns, mask, params)
    kind "preference"        sequence log-prob sums of ranked answers, then
        loss, metrics = objective.loss(PreferenceBatch(...), params)
        (objective.preference_input says whether it wants "pairs" [P, 2] or "lists" [G, K])

Shapes: B sequences, T response tokens (right-padded, mask 1 = real token), G prompt groups / lists,
K answers per list. Every function returns (value, metrics) where metrics are plain floats.

Registered objectives (see each function for the equation and the paper):
    ppo           KL-shaped rewards, GAE with a value model, whitening, clipped surrogate + value
                  loss (today's learner)
    grpo          group-relative advantage (r - mean_g) / (std_g + eps); k3 KL in the loss
    rloo          leave-one-out baseline within the group; sequence-level k1 KL in the reward
    reinforce_pp  token-level KL in the reward, discounted return-to-go, global batch whitening
    dpo           online DPO on (chosen, rejected) pairs
    listwise      LiPO's Plackett-Luce (ListMLE) loss over one prompt's ranked list

A new objective is a new function plus one `register_objective(Objective(...))` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from algos.losses import (
    compute_gae,
    kl_k3,
    kl_shaped_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)

Metrics = dict[str, float]


# ---- inputs and hyperparameters ----------------------------------------------------------------
@dataclass(frozen=True)
class ObjectiveParams:
    """Hyperparameters shared by all objectives; each objective reads only the ones it names.

    kl_coef     KL weight. ppo, rloo, reinforce_pp: penalty in the reward; grpo: DeepSeekMath's
                beta, weight of the k3 term in the loss; dpo, listwise: weight of the trained
                answers' k3 KL (summed over each answer's tokens, mean over answers) in the loss,
                an anchor beside `beta`'s implicit one (0: beta alone).
    kl_mode     ppo only: "token" (per-token penalty) or "sequence" (the paper's
                score - kl_coef * sum_t log(pi/pi_ref) on the last token).
    gamma, lam  ppo: GAE discount and lambda; reinforce_pp: gamma is the return-to-go discount.
    clip_ratio  ppo, grpo, rloo, reinforce_pp: surrogate clip epsilon.
    value_clip  ppo: value-prediction clip.
    whiten      ppo, reinforce_pp: normalise advantages over the batch's real tokens.
                (grpo and rloo advantages are already normalised / centred within each group.)
    beta        dpo, listwise: temperature of the implicit reward beta * log(pi / pi_ref).
    nll_coef    dpo, listwise: weight of the best answer's per-token negative log-likelihood in
                the loss (RPO, Pang et al. 2024, arXiv 2404.19733; 0: none). See `anchored`.
    forward_kl_coef  dpo, listwise: weight of the trained answers' KL(pi_ref || pi) over the whole
                vocabulary at each of their tokens (summed per answer, mean over answers). See `anchored`.
    length_coef dpo, listwise: nats each answer's implicit reward loses per token (R-DPO, Park et
                al. 2024, arXiv 2403.19159; 0: none). See `length_penalised`.
    group_eps   grpo: eps in (r - mean_g) / (std_g + eps).
    scale       grpo: what divides the centred rewards: "group" each group's own std (DeepSeekMath),
                "batch" one std of the centred rewards over the whole batch (a group whose answers
                the reward barely tells apart keeps small advantages), "none" nothing (Dr. GRPO).
    """

    kl_coef: float = 0.05
    kl_mode: Literal["token", "sequence"] = "token"
    gamma: float = 1.0
    lam: float = 0.95
    clip_ratio: float = 0.2
    value_clip: float = 0.2
    whiten: bool = True
    beta: float = 0.1
    nll_coef: float = 0.0
    forward_kl_coef: float = 0.0
    length_coef: float = 0.0
    group_eps: float = 1e-6
    scale: Literal["group", "batch", "none"] = "group"

    def __post_init__(self):
        if self.kl_mode not in ("token", "sequence"):
            raise ValueError(f"unknown kl_mode {self.kl_mode!r}; expected 'token' or 'sequence'")
        if self.scale not in ("group", "batch", "none"):
            raise ValueError(f"unknown scale {self.scale!r}; expected 'group', 'batch' or 'none'")


@dataclass(frozen=True)
class RolloutBatch:
    """What policy-gradient advantages are computed from (no gradients needed).

    scores        [B]    reward-model score of each answer
    group         [B]    long: which prompt each answer answers (any ids; groups may differ in size)
    logprobs      [B, T] log pi_old of each response token (the policy that sampled)
    ref_logprobs  [B, T] log pi_ref of each response token (frozen reference)
    mask          [B, T] 1 = real response token, 0 = padding (right-padded)
    values        [B, T] value-model predictions; only objectives with uses_value_model read it
    """

    scores: torch.Tensor
    group: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    mask: torch.Tensor
    values: torch.Tensor | None = None

    def __post_init__(self):
        batch, width = self.mask.shape
        _check_shape("scores", self.scores, (batch,))
        _check_shape("group", self.group, (batch,))
        if self.group.is_floating_point():
            raise ValueError("group must be an integer tensor (prompt ids)")
        for name in ("logprobs", "ref_logprobs", "values"):
            tensor = getattr(self, name)
            if tensor is not None:
                _check_shape(name, tensor, (batch, width))


@dataclass(frozen=True)
class PolicyLossInputs:
    """One minibatch for a policy-gradient loss.

    logprobs      [b, T] log pi of the response tokens under the policy being trained (with grad)
    old_logprobs  [b, T] log pi_old at sampling time; None = on-policy single epoch: taken as
                  logprobs.detach() (ratio 1, same gradient, no second forward)
    advantages    [b, T] from Objective.advantages, rows matching logprobs
    mask          [b, T] 1 = real response token
    ref_logprobs  [b, T] log pi_ref; read only by objectives with the KL in the loss (grpo)
    """

    logprobs: torch.Tensor
    old_logprobs: torch.Tensor | None
    advantages: torch.Tensor
    mask: torch.Tensor
    ref_logprobs: torch.Tensor | None = None

    def __post_init__(self):
        for name in ("logprobs", "old_logprobs", "advantages", "ref_logprobs"):
            tensor = getattr(self, name)
            if tensor is not None:
                _check_shape(name, tensor, tuple(self.mask.shape))


@dataclass(frozen=True)
class PreferenceBatch:
    """Sequence log-prob sums of ranked answers, best first, padded to K per row.

    logps      [G, K] sum_t log pi(y_k|x) of answer k in list g (with grad)
    ref_logps  [G, K] the same under the frozen reference
    mask       [G, K] True = a real answer; padding anywhere is ignored (values there are not read)
    kl         [G, K] sum_t k3(pi, pi_ref) over each answer's tokens (with grad); needed when
               kl_coef > 0 (see `anchored`)
    lengths    [G, K] tokens in each answer; needed when nll_coef or length_coef > 0
    forward_kl [G, K] sum_t KL(pi_ref || pi) over the vocabulary at each of the answer's tokens
               (with grad; algos.losses.forward_kl); needed when forward_kl_coef > 0
    Pairs (dpo) are K = 2 rows (chosen, rejected): build them with `PreferenceBatch.from_pairs`.
    """

    logps: torch.Tensor
    ref_logps: torch.Tensor
    mask: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    forward_kl: torch.Tensor | None = None

    def __post_init__(self):
        if self.logps.dim() != 2:
            raise ValueError(f"logps must be [G, K], got {tuple(self.logps.shape)}")
        _check_shape("ref_logps", self.ref_logps, tuple(self.logps.shape))
        if self.mask is None:
            object.__setattr__(self, "mask", torch.ones_like(self.logps, dtype=torch.bool))
        else:
            _check_shape("mask", self.mask, tuple(self.logps.shape))
            object.__setattr__(self, "mask", self.mask.bool())
        for name in ("kl", "lengths", "forward_kl"):
            if getattr(self, name) is not None:
                _check_shape(name, getattr(self, name), tuple(self.logps.shape))

    @classmethod
    def from_pairs(cls, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor,
                   ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor
                   ) -> PreferenceBatch:
        """[P] each -> a [P, 2] batch, chosen in column 0."""
        return cls(torch.stack([chosen_logps, rejected_logps], dim=1),
                   torch.stack([ref_chosen_logps, ref_rejected_logps], dim=1))


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) = sum_t log pi(y_t | x, y_<t) over real tokens: [B, T] -> [B].

    The per-answer inputs of the preference objectives (dpo, listwise).
    """
    return (token_logprobs * mask).sum(dim=1)


# ---- group statistics --------------------------------------------------------------------------
def _group_stats(scores: torch.Tensor, group: torch.Tensor):
    """(index [B] into 0..G-1, size [G], sum [G]) for arbitrary group ids."""
    _, index, sizes = torch.unique(group, return_inverse=True, return_counts=True)
    sums = scores.new_zeros(len(sizes)).index_add_(0, index, scores)
    return index, sizes.to(scores.dtype), sums


def group_normalized_advantages(
    scores: torch.Tensor, group: torch.Tensor, eps: float = 1e-6,
    scale: Literal["group", "batch", "none"] = "group",
) -> tuple[torch.Tensor, Metrics]:
    """GRPO's outcome advantage per answer [B] (Shao et al. 2024, DeepSeekMath, Sec. 4.1.2):

        scale "group":  A_i = (r_i - mean_g(r)) / (std_g(r) + eps),   g = group of answer i
        scale "batch":  A_i = (r_i - mean_g(r)) / (std(c) + eps),     c_j = r_j - mean_g(j)(r)
        scale "none":   A_i =  r_i - mean_g(r)                        (Dr. GRPO, arXiv 2503.20783)

    std_g is the unbiased (Bessel, n - 1) standard deviation, as torch.std and TRL / verl use:
    rewards [1, 2, 3] give std 1 and A = [-1, 0, 1] / (1 + eps). A group of equal rewards, or a
    group of one answer, gives A = 0 (no NaN): it carries no learning signal. "group" gives every
    group advantages of the same size however little its rewards differ, so near-ties count as
    much as clear orders; "batch" divides by one unbiased std of all centred rewards, which keeps
    the advantages' overall scale near 1 and a group's weight proportional to its spread. (TRL's
    scale_rewards="batch" takes the std of the raw rewards; centring first keeps differences
    between prompts' mean rewards out of the scale.)
    """
    index, sizes, sums = _group_stats(scores, group)
    centred = scores - (sums / sizes)[index]
    squares = torch.zeros_like(sums).index_add_(0, index, centred**2)
    std = (squares / (sizes - 1).clamp(min=1)).sqrt()
    if scale == "group":
        advantages = centred / (std[index] + eps)
    elif scale == "batch":
        advantages = centred / ((centred.square().sum() / max(len(centred) - 1, 1)).sqrt() + eps)
    else:
        advantages = centred
    return advantages, {
        "score_mean": scores.mean().item(),
        "group_std_mean": std.mean().item(),
        # groups whose answers all got the same score: no gradient from them (DAPO's motivation)
        "flat_group_fraction": (std <= eps).float().mean().item(),
        "groups": float(len(sizes)),
    }


def leave_one_out_advantages(scores: torch.Tensor, group: torch.Tensor
                             ) -> tuple[torch.Tensor, Metrics]:
    """RLOO's advantage per answer [B] (Ahmadian et al. 2024, "Back to Basics", Sec. 3.2):

        A_i = r_i - 1/(n_g - 1) * sum_{j in g, j != i} r_j  =  n_g / (n_g - 1) * (r_i - mean_g(r))

    The baseline of answer i uses only the other answers of its prompt, so it stays unbiased.
    A group of one answer has no baseline: A = 0. Advantages sum to 0 within every group.
    """
    index, sizes, sums = _group_stats(scores, group)
    others = sizes[index] - 1
    baseline = (sums[index] - scores) / others.clamp(min=1)
    advantages = torch.where(others > 0, scores - baseline, torch.zeros_like(scores))
    return advantages, {"score_mean": scores.mean().item(), "groups": float(len(sizes)),
                        "singleton_group_fraction": (sizes == 1).float().mean().item()}


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted return-to-go [B, T] over right-padded rows: G_t = sum_{s >= t} gamma^(s-t) r_s.

    Exactly GAE with V = 0 and lambda = 1 (delta_t = r_t), so it reuses compute_gae.
    """
    advantages, _ = compute_gae(rewards * mask, torch.zeros_like(rewards), mask, gamma, 1.0)
    return advantages


def _broadcast(per_sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, T]: the same advantage on every real token of the answer."""
    return per_sequence[:, None] * mask


# ---- policy-gradient advantages ------------------------------------------------------------------
def ppo_advantages(batch: RolloutBatch, params: ObjectiveParams
                   ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
    """PPO with a learned value (Schulman et al. 2017; GAE: Schulman et al. 2016; KL penalty:
    Ziegler et al. 2019; the paper's sequence form R(x, y) - beta * log(pi(y|x) / pi_ref(y|x))).

        kl_mode "token":    r_t = -kl_coef * (log pi_old - log pi_ref)_t (+ score on the last token)
        kl_mode "sequence": r_t = 0, and on the last token
                            score - kl_coef * sum_t (log pi_old - log pi_ref)_t
        A_t = GAE(r, V; gamma, lam),  returns_t = A_t + V_t,  A whitened over the batch if whiten

    Needs batch.values [B, T]. Returns (advantages [B, T], returns [B, T], metrics).
    """
    if batch.values is None:
        raise ValueError("ppo needs value-model predictions: RolloutBatch.values is None")
    mask = batch.mask
    rewards, metrics = kl_shaped_rewards(batch.scores, batch.logprobs, batch.ref_logprobs, mask,
                                         params.kl_coef, params.kl_mode)
    advantages, returns = compute_gae(rewards, batch.values * mask, mask, params.gamma, params.lam)
    if params.whiten:
        advantages = masked_whiten(advantages, mask)
    metrics["advantage_abs_mean"] = masked_mean(advantages.abs(), mask).item()
    return advantages, returns, metrics


def grpo_advantages(batch: RolloutBatch, params: ObjectiveParams
                    ) -> tuple[torch.Tensor, None, Metrics]:
    """GRPO outcome supervision (Shao et al. 2024, DeepSeekMath, Sec. 4.1.2, Eq. 3):

        A_{i,t} = (r_i - mean_g(r)) / (std_g(r) + group_eps)   on every real token t of answer i

    std unbiased (n - 1); params.scale picks the group's std (above), the batch's, or none: see
    group_normalized_advantages. The KL to the reference is not in the
    reward: it is the k3 term of grpo_policy_loss. No value model.
    Returns (advantages [B, T], None, metrics).
    """
    per_answer, metrics = group_normalized_advantages(batch.scores, batch.group, params.group_eps,
                                                      params.scale)
    metrics["kl"] = _k3_sequence_mean(batch)
    return _broadcast(per_answer, batch.mask), None, metrics


def rloo_advantages(batch: RolloutBatch, params: ObjectiveParams
                    ) -> tuple[torch.Tensor, None, Metrics]:
    """RLOO (Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740, Sec. 3.2), the KL folded into
    the reward at sequence level with the k1 estimator, as OpenRLHF's and TRL's RLOO do:

        r'_i    = score_i - kl_coef * sum_t (log pi_old - log pi_ref)_{i,t}
        A_{i,t} = r'_i - 1/(n_g - 1) * sum_{j in g, j != i} r'_j     on every real token t

    A group of one answer gets A = 0. Not whitened (already centred per group). No value model.
    Returns (advantages [B, T], None, metrics).
    """
    kl_k1 = ((batch.logprobs - batch.ref_logprobs) * batch.mask).sum(dim=1)
    shaped = batch.scores - params.kl_coef * kl_k1
    per_answer, metrics = leave_one_out_advantages(shaped, batch.group)
    metrics.update({"score_mean": batch.scores.mean().item(), "kl_k1": kl_k1.mean().item(),
                    "kl": _k3_sequence_mean(batch), "return_mean": shaped.mean().item()})
    return _broadcast(per_answer, batch.mask), None, metrics


def reinforce_pp_advantages(batch: RolloutBatch, params: ObjectiveParams
                            ) -> tuple[torch.Tensor, None, Metrics]:
    """REINFORCE++ (Hu 2025, arXiv 2501.03262, Sec. 3): token-level KL penalty in the reward,
    discounted return-to-go, and whitening over the whole batch instead of a critic or a group
    baseline:

        r_t = -kl_coef * (log pi_old - log pi_ref)_t  (+ score on the last real token)
        G_t = sum_{s >= t} gamma^(s-t) r_s
        A_t = (G_t - mean(G)) / std(G)   over all real tokens of the batch
                                         (if whiten; population std, as masked_whiten)

    No value model. Returns (advantages [B, T], None, metrics).
    """
    mask = batch.mask
    rewards, metrics = kl_shaped_rewards(batch.scores, batch.logprobs, batch.ref_logprobs, mask,
                                         params.kl_coef, mode="token")
    advantages = returns_to_go(rewards, mask, params.gamma)
    metrics["return_to_go_mean"] = masked_mean(advantages, mask).item()
    if params.whiten:
        advantages = masked_whiten(advantages, mask)
    return advantages, None, metrics


def _k3_sequence_mean(batch: RolloutBatch) -> float:
    """Mean over answers of sum_t k3: the same "kl" figure kl_shaped_rewards reports."""
    return kl_k3(batch.logprobs, batch.ref_logprobs, batch.mask).sum(dim=1).mean().item()


# ---- policy-gradient losses --------------------------------------------------------------------
def _old_logprobs(inputs: PolicyLossInputs) -> torch.Tensor:
    return inputs.logprobs.detach() if inputs.old_logprobs is None else inputs.old_logprobs


def clipped_policy_loss(inputs: PolicyLossInputs, params: ObjectiveParams
                        ) -> tuple[torch.Tensor, Metrics]:
    """PPO's clipped surrogate (Schulman et al. 2017, Eq. 7), token mean over the minibatch:

        L = -mean_t min(rho_t A_t, clip(rho_t, 1 - clip_ratio, 1 + clip_ratio) A_t),
        rho_t = pi(y_t) / pi_old(y_t)

    Used by ppo, rloo and reinforce_pp (as in OpenRLHF). On-policy with one epoch (rho = 1) its
    gradient is plain REINFORCE, -mean_t A_t grad log pi(y_t). Returns (scalar loss, metrics).
    """
    return policy_loss(inputs.logprobs, _old_logprobs(inputs), inputs.advantages, inputs.mask,
                       params.clip_ratio)


def grpo_policy_loss(inputs: PolicyLossInputs, params: ObjectiveParams
                     ) -> tuple[torch.Tensor, Metrics]:
    """GRPO's loss (Shao et al. 2024, DeepSeekMath, Eq. 3 and the k3 KL of Eq. 4):

        L = -mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t) + kl_coef * mean_t k3_t,
        k3_t = pi_ref/pi - log(pi_ref/pi) - 1   (unbiased, >= 0; gradient pulls pi toward pi_ref)

    Token mean over the minibatch (verl's default "token-mean"; the paper's 1/|o_i| per-answer mean
    weights short answers' tokens more). Needs inputs.ref_logprobs unless kl_coef is 0.
    Returns (scalar loss, metrics).
    """
    loss, metrics = clipped_policy_loss(inputs, params)
    if params.kl_coef == 0:
        return loss, {**metrics, "loss": loss.item()}
    if inputs.ref_logprobs is None:
        raise ValueError("grpo with kl_coef > 0 needs PolicyLossInputs.ref_logprobs")
    kl = masked_mean(kl_k3(inputs.logprobs, inputs.ref_logprobs, inputs.mask), inputs.mask)
    loss = loss + params.kl_coef * kl
    return loss, {**metrics, "kl_loss": kl.item(), "loss": loss.item()}


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, params: ObjectiveParams) -> tuple[torch.Tensor, Metrics]:
    """PPO's clipped value loss, all [b, T]: 0.5 * mean_t max((V - R)^2, (V_clip - R)^2),
    V_clip = V_old + clip(V - V_old, -value_clip, value_clip). Returns (scalar loss, metrics)."""
    return value_loss(values, old_values, returns, mask, params.value_clip)


# ---- preference losses -------------------------------------------------------------------------
def dpo_pair_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor,
                  ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                  beta: float) -> tuple[torch.Tensor, Metrics]:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7) on [P] sequence log-prob sums:

        L = -mean_p log sigmoid(beta * ((log pi_w - log ref_w) - (log pi_l - log ref_l)))

    Equal log-ratios give log 2; the gradient raises log pi_w and lowers log pi_l.
    """
    chosen_reward = beta * (chosen_logps - ref_chosen_logps)
    rejected_reward = beta * (rejected_logps - ref_rejected_logps)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    return loss, {
        "dpo_loss": loss.item(),
        "reward_accuracy": (margin > 0).float().mean().item(),
        "reward_margin": margin.mean().item(),
        "chosen_reward": chosen_reward.mean().item(),
        "rejected_reward": rejected_reward.mean().item(),
    }


def plackett_luce_loss(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                       beta: float) -> tuple[torch.Tensor, Metrics]:
    """Listwise Plackett-Luce / ListMLE loss over ranked lists [G, K], best first (LiPO: Liu et al.
    2024, arXiv 2402.01878, Sec. 4, the ListMLE instance; also DPO's Plackett-Luce form, Rafailov
    et al. 2023, App. A.3):

        s_k = beta * (log pi(y_k|x) - log pi_ref(y_k|x))
        L_g = -sum_{k < K_g} [ s_k - logsumexp(s_k, ..., s_{K_g}) ]
        L   = mean of L_g over the lists with K_g >= 2

    Only real answers (mask True) count, in their order; padding can sit anywhere. For K = 2 this
    is exactly the DPO loss. Lists with fewer than two answers carry no ranking and are left out of
    the mean. (LiPO-lambda's pairwise lambda weights are not implemented.)
    """
    mask = mask.bool()
    scores = beta * (logps - ref_logps)
    # A large finite floor, not -inf: -inf would make logcumsumexp's backward 0 * nan.
    floor = torch.finfo(scores.dtype).min
    filled = scores.masked_fill(~mask, floor)
    # suffix logsumexp: tail[k] = logsumexp over the real answers ranked k or lower
    tail = torch.logcumsumexp(filled.flip(-1), dim=-1).flip(-1)
    terms = torch.where(mask, filled - tail, torch.zeros_like(scores))  # the last real term is 0
    sizes = mask.sum(dim=1)
    ranked = sizes >= 2
    per_list = -terms.sum(dim=1)
    loss = (per_list * ranked).sum() / ranked.sum().clamp(min=1)
    with torch.no_grad():
        best = filled.argmax(dim=1)
        first = mask.float().argmax(dim=1)  # position of the best real answer
        top1 = ((best == first) & ranked).sum() / ranked.sum().clamp(min=1)
    return loss, {
        "listwise_loss": loss.item(),
        "top1_accuracy": top1.item(),
        "answers_per_list": sizes.float().mean().item(),
        "implicit_reward_mean": scores[mask].mean().item() if mask.any() else 0.0,
    }


def anchored(result: tuple[torch.Tensor, Metrics], batch: PreferenceBatch,
             params: ObjectiveParams) -> tuple[torch.Tensor, Metrics]:
    """A preference loss plus three optional anchors (each off at weight 0):

        L' = L + kl_coef * mean_{g,k} sum_t [exp(d_t) - d_t - 1],  d_t = log ref_t - log pi_t
               + nll_coef * mean_g -log pi(y_g1|x) / |y_g1|
               + forward_kl_coef * mean_{g,k} sum_t KL(pi_ref(.|x, y_<t) || pi(.|x, y_<t))

    beta bounds the policy only through the pairs' log-ratio margins, which saturate: online DPO
    can lower chosen and rejected answers together and move the probability elsewhere (likelihood
    displacement, Razin et al. 2024, arXiv 2410.08847). The k3 term holds each trained answer's
    tokens near the reference, both ways; it grows exponentially as a token falls below it. The
    NLL term (RPO) pulls the best answer of each item (the chosen one, the top of a list) up
    instead: the policy moves towards its preferred answers, not away from both. The forward KL
    sees the whole next-token distribution, not the sampled token: k3 on the policy's own answers
    lets it drop what the reference found likely but the policy no longer samples, such as a
    human reply's first word (docs/experiments.md E26).
    """
    loss, metrics = result
    anchors = [  # (its weight's name, the batch field it reads, its metric, the term)
        ("kl_coef", "kl", "kl", lambda: batch.kl[batch.mask].mean()),
        ("nll_coef", "lengths", "chosen_nll", lambda: (-batch.logps[:, 0] / batch.lengths[:, 0].clamp(min=1)).mean()),
        ("forward_kl_coef", "forward_kl", "forward_kl", lambda: batch.forward_kl[batch.mask].mean()),
    ]
    for weight_name, field, metric, term in anchors:
        weight = getattr(params, weight_name)
        if weight > 0:
            if getattr(batch, field) is None:
                raise ValueError(f"{weight_name} > 0 needs PreferenceBatch.{field}")
            value = term()
            loss = loss + weight * value
            metrics = {**metrics, metric: value.item()}
    if loss is not result[0]:
        metrics["loss"] = loss.item()
    return loss, metrics


def length_penalised(batch: PreferenceBatch, params: ObjectiveParams) -> torch.Tensor:
    """The reference log-probs that make each answer's implicit reward R-DPO's (Park et al. 2024,
    arXiv 2403.19159):

        r_k = beta * log(pi(y_k|x) / pi_ref(y_k|x)) - length_coef * |y_k|
            = beta * (log pi(y_k|x) - [log pi_ref(y_k|x) + (length_coef / beta) * |y_k|])

    A pair whose chosen answer is the shorter starts partly won, so the loss pushes less towards
    shorter answers for their own sake: under `ranking.cut_answers: last` nearly every early pair
    is a finished answer over one cut at the cap, and the chosen side stayed shorter at every
    iteration while the policy shrank into echoes of the prompt (docs/experiments.md E25).
    """
    if params.length_coef == 0:
        return batch.ref_logps
    if batch.lengths is None:
        raise ValueError("length_coef > 0 needs PreferenceBatch.lengths")
    return batch.ref_logps + params.length_coef / params.beta * batch.lengths


def dpo_loss(batch: PreferenceBatch, params: ObjectiveParams) -> tuple[torch.Tensor, Metrics]:
    """Online DPO (Rafailov et al. 2023, Eq. 7) on a [P, 2] batch of (chosen, rejected) pairs:

        L = -mean log sigmoid(beta * ((log pi_w - log ref_w) - (log pi_l - log ref_l)))

    Inputs are sequence log-prob sums (sequence_logprobs). Every row must hold two real answers.
    kl_coef, nll_coef and forward_kl_coef > 0 add `anchored`'s terms; length_coef > 0 makes the
    implicit rewards R-DPO's (`length_penalised`).
    """
    if batch.logps.shape[1] != 2 or not bool(batch.mask.all()):
        raise ValueError("dpo needs [P, 2] (chosen, rejected) rows with no padding, "
                         f"got {tuple(batch.logps.shape)}")
    logps, ref = batch.logps, length_penalised(batch, params)
    return anchored(dpo_pair_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], params.beta), batch, params)


def listwise_loss(batch: PreferenceBatch, params: ObjectiveParams) -> tuple[torch.Tensor, Metrics]:
    """LiPO-style listwise loss (Liu et al. 2024, arXiv 2402.01878) on [G, K] ranked lists,
    best first:

        L = mean_g -sum_{k < K_g} [ s_k - logsumexp(s_k..s_{K_g}) ],
        s_k = beta * log(pi(y_k|x) / pi_ref(y_k|x))

    See plackett_luce_loss. Equals dpo_loss on K = 2 lists. kl_coef, nll_coef and forward_kl_coef > 0 add `anchored`'s terms;
    length_coef > 0 takes length_coef per token off each s_k (`length_penalised`).
    """
    return anchored(plackett_luce_loss(batch.logps, length_penalised(batch, params), batch.mask, params.beta),
                    batch, params)


# ---- registry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """What the learner needs to know about an objective, so that it never branches on its name.

    kind              "policy_gradient": advantages(RolloutBatch, params) -> (advantages [B, T],
                      returns [B, T] | None, metrics), then
                      loss(PolicyLossInputs, params) -> (loss, metrics).
                      "preference": loss(PreferenceBatch, params) -> (loss, metrics).
    value_loss        (values, old_values, returns, mask, params) -> (loss, metrics), or None
                      when there is no value model (advantages then returns None for returns).
    preference_input  preference objectives only: "pairs" ([P, 2] chosen/rejected rows) or "lists"
                      ([G, K] ranked lists, best first).
    """

    name: str
    kind: Literal["policy_gradient", "preference"]
    loss: Callable[..., tuple[torch.Tensor, Metrics]]
    advantages: Callable[[RolloutBatch, ObjectiveParams],
                         tuple[torch.Tensor, torch.Tensor | None, Metrics]] | None = None
    value_loss: Callable[..., tuple[torch.Tensor, Metrics]] | None = None
    preference_input: Literal["pairs", "lists"] | None = None

    def __post_init__(self):
        if self.kind == "policy_gradient":
            if self.advantages is None or self.preference_input is not None:
                raise ValueError(f"{self.name}: a policy_gradient objective needs advantages "
                                 "and no preference_input")
        elif self.kind == "preference":
            if self.advantages is not None or self.value_loss is not None:
                raise ValueError(f"{self.name}: a preference objective has no advantages "
                                 "or value_loss")
            if self.preference_input not in ("pairs", "lists"):
                raise ValueError(f"{self.name}: preference_input must be 'pairs' or 'lists'")
        else:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def uses_value_model(self) -> bool:
        return self.value_loss is not None

    @property
    def description(self) -> str:
        """The docstrings of its functions: equations and papers."""
        parts = [self.advantages, self.loss, self.value_loss]
        return "\n\n".join(f.__doc__.strip() for f in parts if f is not None and f.__doc__)


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective, *, replace: bool = False) -> Objective:
    """Add objective to OBJECTIVES under its name; a taken name is an error unless replace."""
    if objective.name in OBJECTIVES and not replace:
        raise ValueError(f"objective {objective.name!r} is already registered")
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    """The registered objective called name; ValueError listing the known names otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        known = ", ".join(sorted(OBJECTIVES))
        raise ValueError(f"unknown objective {name!r}; known: {known}") from None


_PG, _PREF = "policy_gradient", "preference"
register_objective(Objective("ppo", _PG, clipped_policy_loss, ppo_advantages, clipped_value_loss))
register_objective(Objective("grpo", _PG, grpo_policy_loss, grpo_advantages))
register_objective(Objective("rloo", _PG, clipped_policy_loss, rloo_advantages))
register_objective(Objective("reinforce_pp", _PG, clipped_policy_loss, reinforce_pp_advantages))
register_objective(Objective("dpo", _PREF, dpo_loss, preference_input="pairs"))
register_objective(Objective("listwise", _PREF, listwise_loss, preference_input="lists"))
