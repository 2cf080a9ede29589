import math

import pytest
import torch

import algos.objectives as objectives
from algos.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveParams,
    PolicyLossInputs,
    PreferenceBatch,
    RolloutBatch,
    dpo_pair_loss,
    get_objective,
    group_normalized_advantages,
    register_objective,
    returns_to_go,
)
from algos.losses import compute_gae, kl_k3, kl_shaped_rewards, masked_whiten, policy_loss, value_loss

pytestmark = pytest.mark.unit


def _mask(lengths, width):
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()


def _batch(scores, group, logprobs=None, ref=None, mask=None, values=None):
    scores = torch.tensor(scores, dtype=torch.float32)
    mask = torch.ones(len(scores), 3) if mask is None else mask
    logprobs = torch.zeros_like(mask) if logprobs is None else logprobs
    ref = torch.zeros_like(mask) if ref is None else ref
    return RolloutBatch(scores, torch.tensor(group), logprobs, ref, mask, values)


def _close(tensor, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=tensor.dtype)
    torch.testing.assert_close(tensor, expected, atol=atol, rtol=0)


def _lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


# ---- registry -----------------------------------------------------------------------------------
def test_registry_names_and_what_each_objective_needs():
    assert set(OBJECTIVES) == {"ppo", "grpo", "rloo", "reinforce_pp", "dpo", "listwise"}
    assert {n for n, o in OBJECTIVES.items() if o.uses_value_model} == {"ppo"}
    assert {n for n, o in OBJECTIVES.items() if o.kind == "preference"} == {"dpo", "listwise"}
    assert get_objective("dpo").preference_input == "pairs"
    assert get_objective("listwise").preference_input == "lists"
    for objective in OBJECTIVES.values():
        assert (objective.advantages is not None) == (objective.kind == "policy_gradient")


def test_unknown_objective_lists_known_names():
    with pytest.raises(ValueError) as error:
        get_objective("a2c")
    message = str(error.value)
    assert "'a2c'" in message
    for name in OBJECTIVES:
        assert name in message


CITATIONS = {"ppo": "Schulman", "grpo": "Shao et al. 2024", "rloo": "Ahmadian et al. 2024",
             "reinforce_pp": "Hu 2025", "dpo": "Rafailov et al. 2023", "listwise": "2402.01878"}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_is_documented(name):
    objective = get_objective(name)
    for function in (objective.advantages, objective.loss, objective.value_loss):
        if function is not None:
            assert function.__doc__ and len(function.__doc__.strip()) > 40
    assert CITATIONS[name] in objective.description


def test_register_a_new_objective_without_touching_the_others(monkeypatch):
    monkeypatch.setattr(objectives, "OBJECTIVES", dict(OBJECTIVES))

    def mean_baseline(batch, params):
        """REINFORCE with the batch-mean baseline: A_i = r_i - mean(r)."""
        centred = batch.scores - batch.scores.mean()
        return centred[:, None] * batch.mask, None, {}

    new = Objective("reinforce", "policy_gradient", objectives.clipped_policy_loss, mean_baseline)
    register_objective(new)
    assert objectives.get_objective("reinforce") is new
    with pytest.raises(ValueError, match="already registered"):
        register_objective(new)
    register_objective(new, replace=True)
    with pytest.raises(ValueError):
        Objective("bad", "preference", objectives.dpo_loss, mean_baseline, preference_input="pairs")
    assert "reinforce" not in OBJECTIVES  # the module's registry was swapped out for the test


# ---- GRPO ---------------------------------------------------------------------------------------
def test_grpo_group_advantages_by_hand():
    # groups interleaved and of sizes 3, 2, 1: ids 0 -> [1, 2, 3], 5 -> [4, 4], 9 -> [7]
    mask = _mask([3, 2, 1, 3, 2, 3], 3)
    batch = _batch([1.0, 4.0, 2.0, 7.0, 3.0, 4.0], [0, 5, 0, 9, 0, 5], mask=mask)
    advantages, returns, metrics = get_objective("grpo").advantages(batch, ObjectiveParams())
    assert returns is None
    # group [1, 2, 3]: mean 2, unbiased std sqrt(((-1)^2 + 0 + 1^2) / (3 - 1)) = 1 -> A = -1, 0, 1
    # (population std would be sqrt(2/3) and give +-1.22). Equal rewards / one answer -> 0, not NaN.
    per_answer = torch.tensor([-1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert torch.isfinite(advantages).all()
    _close(advantages, per_answer[:, None] * mask, atol=1e-5)
    assert metrics["flat_group_fraction"] == pytest.approx(2 / 3)
    assert metrics["groups"] == 3.0


def test_grpo_equal_rewards_give_exactly_zero():
    same = torch.full((4,), 0.7)
    advantages, _ = group_normalized_advantages(same, torch.zeros(4, dtype=torch.long))
    assert advantages.tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("scale, expected", [
    # centred rewards: group 0 [0, 2] -> [-1, 1], group 1 [5, 5.2] -> [-0.1, 0.1]
    # group: each group's unbiased std (sqrt(2) and sqrt(0.02)): both groups become +-1/sqrt(2)
    ("group", [-0.70711, 0.70711, -0.70711, 0.70711]),
    # batch: one unbiased std over the 4 centred values, sqrt((1 + 1 + 0.01 + 0.01) / 3) = 0.82057
    ("batch", [-1.21867, 1.21867, -0.12187, 0.12187]),
    ("none", [-1.0, 1.0, -0.1, 0.1]),
])
def test_grpo_scale_decides_whether_a_near_tie_counts_as_much_as_a_clear_order(scale, expected):
    batch = _batch([0.0, 2.0, 5.0, 5.2], [0, 0, 1, 1], mask=_mask([2, 2, 2, 2], 2))
    advantages, _, _ = get_objective("grpo").advantages(batch, ObjectiveParams(scale=scale))
    _close(advantages[:, 0], torch.tensor(expected), atol=1e-4)


def test_unknown_grpo_scale_is_refused():
    with pytest.raises(ValueError, match="unknown scale 'rank'"):
        ObjectiveParams(scale="rank")


def test_grpo_loss_adds_k3_to_the_clipped_surrogate():
    objective = get_objective("grpo")
    logprobs = torch.zeros(1, 2, requires_grad=True)
    inputs = PolicyLossInputs(logprobs, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2),
                              ref_logprobs=torch.full((1, 2), -1.0))
    loss, metrics = objective.loss(inputs, ObjectiveParams(kl_coef=0.1))
    # ratio 1, A = 1: surrogate -1; k3 with d = ref - logp = -1: e^-1 + 1 - 1 = e^-1 per token
    assert loss.item() == pytest.approx(-1 + 0.1 * math.exp(-1))
    assert metrics["kl_loss"] == pytest.approx(math.exp(-1))
    loss.backward()
    # d/dlogp per token (mean over 2): (-A + kl_coef * (1 - e^(ref - logp))) / 2;
    # the k3 part pulls pi toward pi_ref
    _close(logprobs.grad, [[(-1 + 0.1 * (1 - math.exp(-1))) / 2] * 2])


def test_grpo_loss_reference_rules_and_on_policy_shortcut():
    objective = get_objective("grpo")
    logprobs = torch.tensor([[-0.5, -1.0]], requires_grad=True)
    no_ref = PolicyLossInputs(logprobs, None, torch.tensor([[1.0, -2.0]]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="ref_logprobs"):
        objective.loss(no_ref, ObjectiveParams(kl_coef=0.1))
    # kl_coef 0: no reference forward needed; old_logprobs None means ratio 1 (one epoch on-policy)
    loss, _ = objective.loss(no_ref, ObjectiveParams(kl_coef=0.0))
    assert loss.item() == pytest.approx(-(1.0 - 2.0) / 2)
    loss.backward()
    _close(logprobs.grad, [[-0.5, 1.0]])


# ---- RLOO ---------------------------------------------------------------------------------------
def test_rloo_leave_one_out_baseline_by_hand():
    mask = _mask([3, 2, 3, 3, 3, 3], 3)
    logprobs = torch.zeros(6, 3)
    ref = torch.zeros(6, 3)
    ref[1] = torch.tensor([-1.0, -1.0, 0.0])
    logprobs[1, 2] = 100.0  # padding: must not count
    ref[5] = torch.tensor([-1.0, -1.0, -1.0])
    batch = _batch([1.0, 2.0, 3.0, 0.0, 4.0, 5.0], [0, 0, 0, 1, 1, 2], logprobs, ref, mask)
    params = ObjectiveParams(kl_coef=0.5)
    advantages, returns, metrics = get_objective("rloo").advantages(batch, params)
    assert returns is None
    # sequence k1 = sum_t (logp - ref): [0, 2, 0, 0, 0, 3]
    # -> r' = score - 0.5 k1 = [1, 1, 3, 0, 4, 3.5]
    # group 0: 1 - (1 + 3)/2 = -1, 1 - (1 + 3)/2 = -1, 3 - (1 + 1)/2 = 2; group 1: -4, 4; alone: 0
    per_answer = torch.tensor([-1.0, -1.0, 2.0, -4.0, 4.0, 0.0])
    _close(advantages, per_answer[:, None] * mask)
    assert metrics["kl_k1"] == pytest.approx(5 / 6)
    assert metrics["singleton_group_fraction"] == pytest.approx(1 / 3)


# ---- REINFORCE++ --------------------------------------------------------------------------------
def test_reinforce_pp_return_to_go_and_whitening_by_hand():
    mask = _mask([3, 2], 3)
    logprobs = torch.tensor([[-1.0, -2.0, -1.0], [-1.0, -1.0, 50.0]])
    ref = torch.tensor([[-2.0, -2.0, -1.0], [-1.0, -1.0, 0.0]])
    batch = _batch([2.0, -1.0], [0, 1], logprobs, ref, mask)
    params = ObjectiveParams(kl_coef=0.1, gamma=0.5, whiten=False)
    raw, returns, _ = get_objective("reinforce_pp").advantages(batch, params)
    assert returns is None
    # rewards row 0: [-0.1 * 1, 0, 2] -> G = [-0.1 + 0.5 * 1, 0 + 0.5 * 2, 2] = [0.4, 1, 2]
    # rewards row 1: [0, -1, pad]     -> G = [-0.5, -1, 0]
    _close(raw, [[0.4, 1.0, 2.0], [-0.5, -1.0, 0.0]])
    white, _, _ = get_objective("reinforce_pp").advantages(
        batch, ObjectiveParams(kl_coef=0.1, gamma=0.5))
    # over the 5 real tokens: mean 1.9 / 5 = 0.38, population variance 5.688 / 5 = 1.1376
    std = math.sqrt(1.1376)
    expected = [[(g - 0.38) / std for g in row] for row in ([0.4, 1.0, 2.0], [-0.5, -1.0])]
    assert white[0].tolist() == pytest.approx(expected[0], abs=1e-5)
    assert white[1, :2].tolist() == pytest.approx(expected[1], abs=1e-5)
    assert white[1, 2] == 0


def test_returns_to_go_is_discounted_sum():
    rewards = torch.tensor([[1.0, 2.0, 4.0]])
    assert returns_to_go(rewards, torch.ones(1, 3), 0.5).tolist() == [[1 + 1 + 1, 2 + 2, 4.0]]


# ---- PPO ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kl_mode,whiten", [("token", True), ("sequence", False)])
def test_ppo_through_the_registry_equals_algos_losses(kl_mode, whiten):
    g = torch.Generator().manual_seed(3)
    mask = _mask([3, 1, 2, 3], 3)
    scores = torch.randn(4, generator=g)
    logprobs, ref = -torch.rand(4, 3, generator=g), -torch.rand(4, 3, generator=g)
    values = torch.randn(4, 3, generator=g)
    params = ObjectiveParams(kl_coef=0.2, kl_mode=kl_mode, gamma=0.9, lam=0.8, whiten=whiten,
                             clip_ratio=0.1, value_clip=0.3)
    objective = get_objective("ppo")
    batch = RolloutBatch(scores, torch.arange(4), logprobs, ref, mask, values)
    advantages, returns, metrics = objective.advantages(batch, params)

    rewards, direct_metrics = kl_shaped_rewards(scores, logprobs, ref, mask, 0.2, kl_mode)
    expected_adv, expected_ret = compute_gae(rewards, values * mask, mask, 0.9, 0.8)
    if whiten:
        expected_adv = masked_whiten(expected_adv, mask)
    assert torch.equal(advantages, expected_adv) and torch.equal(returns, expected_ret)
    assert metrics["kl"] == direct_metrics["kl"]

    new_logprobs = logprobs + 0.3 * torch.randn(4, 3, generator=g)
    loss, _ = objective.loss(PolicyLossInputs(new_logprobs, logprobs, advantages, mask), params)
    assert loss.item() == policy_loss(new_logprobs, logprobs, advantages, mask, 0.1)[0].item()
    new_values = values + torch.randn(4, 3, generator=g)
    v_loss, _ = objective.value_loss(new_values, values, returns, mask, params)
    assert v_loss.item() == value_loss(new_values, values, returns, mask, 0.3)[0].item()


def test_ppo_needs_values():
    with pytest.raises(ValueError, match="values"):
        get_objective("ppo").advantages(_batch([1.0], [0]), ObjectiveParams())


@pytest.mark.parametrize("name", ["ppo", "grpo", "rloo", "reinforce_pp"])
def test_policy_gradient_objectives_share_one_calling_shape(name):
    g = torch.Generator().manual_seed(5)
    mask = _mask([3, 2, 1, 3], 3)
    objective = get_objective(name)
    batch = RolloutBatch(torch.randn(4, generator=g), torch.tensor([0, 0, 1, 1]),
                         -torch.rand(4, 3, generator=g), -torch.rand(4, 3, generator=g), mask,
                         torch.randn(4, 3, generator=g) if objective.uses_value_model else None)
    params = ObjectiveParams()
    advantages, returns, metrics = objective.advantages(batch, params)
    assert advantages.shape == (4, 3) and torch.isfinite(advantages).all()
    assert (advantages * (1 - mask)).abs().sum() == 0
    assert (returns is not None) == objective.uses_value_model
    logprobs = batch.logprobs.clone().requires_grad_(True)
    loss, loss_metrics = objective.loss(
        PolicyLossInputs(logprobs, batch.logprobs, advantages, mask, batch.ref_logprobs), params)
    loss.backward()
    assert torch.isfinite(logprobs.grad).all()
    for value in {**metrics, **loss_metrics}.values():
        assert type(value) is float


def test_rollout_batch_checks_shapes():
    with pytest.raises(ValueError, match="logprobs"):
        RolloutBatch(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.zeros(2, 4),
                     torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="integer"):
        RolloutBatch(torch.zeros(2), torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 3),
                     torch.ones(2, 3))
    with pytest.raises(ValueError, match="kl_mode"):
        ObjectiveParams(kl_mode="k2")


# ---- DPO ----------------------------------------------------------------------------------------
def test_dpo_equal_log_ratios_give_log2_and_push_chosen_up():
    chosen = torch.tensor([-3.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    batch = PreferenceBatch.from_pairs(chosen, rejected, torch.tensor([-3.0]), torch.tensor([-5.0]))
    loss, metrics = get_objective("dpo").loss(batch, ObjectiveParams(beta=0.1, kl_coef=0.0))
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    # dL/dlogpi_w = -beta * sigmoid(-margin) = -0.05: descent raises log pi_w, lowers log pi_l
    assert chosen.grad.item() == pytest.approx(-0.05)
    assert rejected.grad.item() == pytest.approx(0.05)
    assert metrics["reward_margin"] == 0.0


def test_dpo_by_hand_and_shape_check():
    # beta 0.1, log ratios 10 and 0 -> margin 1 -> loss log(1 + e^-1)
    loss, metrics = dpo_pair_loss(torch.tensor([0.0]), torch.tensor([-4.0]), torch.tensor([-10.0]),
                                  torch.tensor([-4.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert metrics["reward_accuracy"] == 1.0
    with pytest.raises(ValueError, match="dpo needs"):
        get_objective("dpo").loss(PreferenceBatch(torch.zeros(2, 3), torch.zeros(2, 3)),
                                  ObjectiveParams())


@pytest.mark.parametrize("name", ["dpo", "listwise"])
def test_the_kl_anchor_adds_kl_coef_times_the_mean_answer_kl_and_lifts_a_fallen_answer(name):
    logps = torch.tensor([[-3.0, -6.0], [-2.0, -4.0]])
    ref = torch.tensor([[-3.0, -5.0], [-2.0, -4.0]])
    token_logps = torch.tensor([[-1.0, -2.5], [-3.0, -0.5]], requires_grad=True)  # two answers' tokens
    ref_tokens = torch.tensor([[-1.0, -2.0], [-2.0, -0.5]])
    answer_kl = kl_k3(token_logps, ref_tokens, torch.ones(2, 2)).sum(dim=1)  # [0.5 -> e^.5-1.5, 1 -> e-2]
    kl = torch.stack([answer_kl, torch.zeros(2)], dim=1)  # each list's second answer did not move
    plain, _ = get_objective(name).loss(PreferenceBatch(logps, ref), ObjectiveParams(kl_coef=0.0))
    anchored, metrics = get_objective(name).loss(PreferenceBatch(logps, ref, kl=kl), ObjectiveParams(kl_coef=0.5))
    expected_kl = ((math.exp(0.5) - 1.5) + (math.e - 2)) / 4
    assert metrics["kl"] == pytest.approx(expected_kl)
    assert anchored.item() == pytest.approx(plain.item() + 0.5 * expected_kl)
    anchored.backward()
    # descent raises the tokens that fell below the reference, leaves the others where they are
    assert token_logps.grad[0, 1] < 0 and token_logps.grad[1, 0] < 0
    assert token_logps.grad[0, 0] == 0 and token_logps.grad[1, 1] == 0
    with pytest.raises(ValueError, match="PreferenceBatch.kl"):
        get_objective(name).loss(PreferenceBatch(logps, ref), ObjectiveParams(kl_coef=0.5))


@pytest.mark.parametrize("name", ["dpo", "listwise"])
def test_the_nll_anchor_adds_nll_coef_times_the_best_answers_per_token_nll_and_lifts_it(name):
    logps = torch.tensor([[-3.0, -6.0], [-2.0, -4.0]], requires_grad=True)
    ref = torch.tensor([[-3.0, -5.0], [-2.0, -4.0]])
    lengths = torch.tensor([[3.0, 2.0], [4.0, 4.0]])
    plain, _ = get_objective(name).loss(PreferenceBatch(logps, ref), ObjectiveParams(kl_coef=0.0))
    anchored, metrics = get_objective(name).loss(PreferenceBatch(logps, ref, lengths=lengths),
                                                 ObjectiveParams(kl_coef=0.0, nll_coef=0.5))
    expected_nll = (3.0 / 3 + 2.0 / 4) / 2  # the best answers only, per token
    assert metrics["chosen_nll"] == pytest.approx(expected_nll)
    assert anchored.item() == pytest.approx(plain.item() + 0.5 * expected_nll)
    grad_plain = torch.autograd.grad(plain, logps)[0]
    grad = torch.autograd.grad(anchored, logps)[0]
    # descent raises each best answer by nll_coef / (rows * its length) more; the others as before
    assert torch.allclose(grad - grad_plain, torch.tensor([[-0.5 / 6, 0.0], [-0.5 / 8, 0.0]]))
    with pytest.raises(ValueError, match="PreferenceBatch.lengths"):
        get_objective(name).loss(PreferenceBatch(logps, ref), ObjectiveParams(kl_coef=0.0, nll_coef=0.5))


@pytest.mark.parametrize("name", ["dpo", "listwise"])
def test_the_forward_kl_anchor_adds_its_mean_over_real_answers(name):
    logps = torch.tensor([[-3.0, -6.0], [-2.0, -4.0]], requires_grad=True)
    ref = torch.tensor([[-3.0, -5.0], [-2.0, -4.0]])
    forward = torch.tensor([[0.2, 0.4], [0.0, 0.6]], requires_grad=True)
    plain, _ = get_objective(name).loss(PreferenceBatch(logps, ref), ObjectiveParams(kl_coef=0.0))
    anchored, metrics = get_objective(name).loss(PreferenceBatch(logps, ref, forward_kl=forward),
                                                 ObjectiveParams(kl_coef=0.0, forward_kl_coef=0.5))
    assert metrics["forward_kl"] == pytest.approx(0.3)
    assert anchored.item() == pytest.approx(plain.item() + 0.5 * 0.3)
    assert torch.allclose(torch.autograd.grad(anchored, forward)[0], torch.full((2, 2), 0.5 / 4))
    with pytest.raises(ValueError, match="PreferenceBatch.forward_kl"):
        get_objective(name).loss(PreferenceBatch(logps, ref), ObjectiveParams(kl_coef=0.0, forward_kl_coef=0.5))


@pytest.mark.parametrize("name", ["dpo", "listwise"])
def test_the_length_term_takes_length_coef_per_token_off_each_implicit_reward(name):
    """R-DPO: with beta 0.1 and length_coef 0.05, a chosen answer 20 tokens shorter than the
    rejected one starts the pair 1.0 nat of margin ahead, so its loss is log(1 + e^-1)."""
    logps = torch.tensor([[-30.0, -60.0]], requires_grad=True)
    ref = logps.detach().clone()  # the policy is the reference: beta's margin is 0
    lengths = torch.tensor([[10.0, 30.0]])
    params = ObjectiveParams(kl_coef=0.0, beta=0.1, length_coef=0.05)
    loss, _ = get_objective(name).loss(PreferenceBatch(logps, ref, lengths=lengths), params)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-5)
    plain, _ = get_objective(name).loss(PreferenceBatch(logps, ref, lengths=lengths), ObjectiveParams(kl_coef=0.0))
    assert plain.item() == pytest.approx(math.log(2.0))
    # the shorter-chosen pair pushes less: sigmoid(-1) instead of sigmoid(0) of the gradient
    grad = torch.autograd.grad(loss, logps)[0]
    assert grad[0, 0].item() == pytest.approx(-0.1 / (1 + math.e), rel=1e-5)
    with pytest.raises(ValueError, match="PreferenceBatch.lengths"):
        get_objective(name).loss(PreferenceBatch(logps, ref), params)


# ---- listwise -----------------------------------------------------------------------------------
def test_listwise_with_two_answers_equals_dpo():
    g = torch.Generator().manual_seed(7)
    logps, ref = -10 * torch.rand(5, 2, generator=g), -10 * torch.rand(5, 2, generator=g)
    params = ObjectiveParams(beta=0.3, kl_coef=0.0)
    listwise, _ = get_objective("listwise").loss(PreferenceBatch(logps, ref), params)
    dpo, _ = get_objective("dpo").loss(PreferenceBatch(logps, ref), params)
    assert listwise.item() == pytest.approx(dpo.item(), abs=1e-6)


def test_listwise_by_hand_with_padding():
    inf = float("inf")
    logps = torch.tensor([[4.0, 2.0, 0.0],     # beta 0.5 -> s = 2, 1, 0
                          [2.0, 0.0, -inf],    # s = 1, 0, padding
                          [6.0, 1.0, 99.0],    # s = 3, padding, 0 (a hole: order of real ones kept)
                          [5.0, inf, 99.0]],   # one answer: no ranking, left out of the mean
                         requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 1], [1, 0, 0]], dtype=torch.bool)
    ref = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 99.0], [0.0, 0.0, 0.0]])
    batch = PreferenceBatch(logps, ref, mask)
    loss, metrics = get_objective("listwise").loss(batch, ObjectiveParams(beta=0.5, kl_coef=0.0))
    three = (_lse(2, 1, 0) - 2) + (_lse(1, 0) - 1)  # -[s1 - lse(s1..s3)] - [s2 - lse(s2, s3)]
    two = _lse(1, 0) - 1                              # = -log sigmoid(1 - 0), the DPO loss
    hole = _lse(3, 0) - 3
    assert loss.item() == pytest.approx((three + two + hole) / 3, abs=1e-6)
    assert metrics["top1_accuracy"] == 1.0
    loss.backward()
    assert torch.isfinite(logps.grad).all()
    assert logps.grad[~mask].abs().sum() == 0
    assert logps.grad[3].abs().sum() == 0
    assert logps.grad[0, 0] < 0 < logps.grad[0, 2]  # best pushed up, worst pushed down
