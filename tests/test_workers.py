"""Workers built directly (no Ray): rollout engines, weight loading, the DeepSpeed learner; and
the learner group (two ranks on a local Ray cluster) against one learner."""

import math
import os
import tempfile
from pathlib import Path

import pytest
import torch

import crowdless.learner.preference as preference_phase
from configs.schema import load_config
from crowdless.learner.engines import full_state_dict
from crowdless.learner.tokens import token_batch

pytestmark = pytest.mark.ray

PROMPTS = ["What is the capital of France?", "Name a colour."]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config("tiny", [f"run.dir={tmp_path_factory.mktemp('run')}"])


def _perturbed_state(model_dir, scale=0.5):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _hf_logprobs(model, rollout):
    ids = torch.tensor([rollout.prompt_ids + rollout.response_ids])
    with torch.no_grad():
        logprobs = model(ids).logits[0, :-1].log_softmax(-1)
    start = len(rollout.prompt_ids) - 1
    return [logprobs[start + t, token].item() for t, token in enumerate(rollout.response_ids)]


def _check_rollouts(samples, config):
    assert len(samples) == len(PROMPTS)
    for prompt, per_prompt in zip(PROMPTS, samples):
        assert len(per_prompt) == config.rollout.samples_per_prompt
        for rollout in per_prompt:
            assert rollout.prompt == prompt
            assert 0 < len(rollout.response_ids) <= config.rollout.max_new_tokens
            assert len(rollout.logprobs) == len(rollout.response_ids)
            assert all(lp <= 0 for lp in rollout.logprobs)


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_rollout_worker_generates_with_new_weights(backend, config, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from actors.rollout_worker import RolloutWorker

    rollout_config = config.rollout.model_copy(update={"backend": backend})
    worker = RolloutWorker(tiny_model_dir, config.model, rollout_config, seed=0)
    if backend == "vllm" and not torch.cuda.is_available():  # decoding on every core, none kept for the scheduler
        assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    before = worker.generate(PROMPTS)
    _check_rollouts(before, config)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sample = before[0][0]
    assert _hf_logprobs(original, sample) == pytest.approx(sample.logprobs, abs=2e-3)

    perturbed, state = _perturbed_state(tiny_model_dir)
    seconds = worker.load_weights(state)
    assert seconds >= 0
    leftovers = [Path(root) / f"crowdless-{os.getpid()}" for root in ("/dev/shm", tempfile.gettempdir())]
    assert not any(folder.exists() for folder in leftovers)  # /dev/shm is memory: the file is removed
    after = worker.generate(PROMPTS)
    _check_rollouts(after, config)
    seeded = worker.generate(PROMPTS, seed=7)
    assert _texts(worker.generate(PROMPTS, seed=7)) == _texts(seeded)
    assert _texts(worker.generate(PROMPTS, seed=8)) != _texts(seeded)
    if backend == "vllm":  # per-prompt seeds: a prompt's answers do not depend on its batch
        assert _texts(worker.generate(PROMPTS[1:], seed=7)) == _texts(seeded)[1:]
    sample = after[0][0]
    # the engine's log-probs are those of the new weights, not the old ones
    assert _hf_logprobs(perturbed, sample) == pytest.approx(sample.logprobs, abs=2e-3)
    assert _hf_logprobs(original, sample) != pytest.approx(sample.logprobs, abs=2e-3)


def _texts(samples) -> list[list[str]]:
    return [[r.response_text for r in per_prompt] for per_prompt in samples]


def _rollouts_and_groups(config, model_dir, embedder, policy_state=None):
    """Sampled answers (transformers backend, from policy_state where given, as after a weight
    sync) and the ranker's groups for them."""
    import numpy as np

    from actors.rollout_worker import RolloutWorker
    from crowdless.ranking import embed, rank_group

    rollout_config = config.rollout.model_copy(update={"backend": "transformers"})
    sampler = RolloutWorker(model_dir, config.model, rollout_config, seed=0)
    if policy_state is not None:
        sampler.load_weights(policy_state)
    samples = sampler.generate(PROMPTS)
    groups = []
    for i, (prompt, per_prompt) in enumerate(zip(PROMPTS, samples)):
        answers = [r.response_text for r in per_prompt]
        groups.append(rank_group(prompt, answers, embed(embedder, answers), config.ranking,
                                 np.random.default_rng(i)))
    return [r for per_prompt in samples for r in per_prompt], groups


def iteration_pairs(iteration: int) -> list:
    """Ten preference pairs, different each iteration: a clear answer over a garbled one."""
    from algos.pairs import PreferencePair

    return [PreferencePair(f"question {iteration}.{i}?", "a clear answer.", f"zz {i} qq", 0, 1) for i in range(10)]


def test_policy_update_from_engine_logprobs_equals_recompute(tmp_path, tiny_model_dir, embedder):
    """policy.old_logprobs=engine skips a forward pass over every answer; the update must be the one
    the learner gets when it recomputes the sampling policy's log-probs itself."""
    from actors.learner_worker import LearnerWorker

    rollouts = groups = initial = None
    states = {}
    for mode in ("engine", "recompute"):
        config = load_config("tiny", [f"run.dir={tmp_path / mode}", "policy.objective=grpo",
                                      "reward.source=ranker", f"policy.old_logprobs={mode}"])
        learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
        if rollouts is None:  # one batch of answers for both modes
            rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)
            initial = learner.policy_state()
        metrics = learner.train_policy(rollouts, 1, groups)
        assert metrics["engine_logprob_gap"] < 1e-3
        states[mode] = learner.policy_state()

    def distance(a, b):
        return sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in a) ** 0.5

    update = distance(states["engine"], initial)
    assert update > 0
    assert distance(states["engine"], states["recompute"]) < 0.01 * update


@pytest.mark.parametrize("answer_tokens", ["sampled", "retokenized"])
def test_preference_rows_are_the_sampled_tokens_and_a_cut_answer_has_no_eos(
        answer_tokens, tmp_path, tiny_model_dir, embedder, monkeypatch):
    """policy.answer_tokens=sampled: dpo trains on the token ids the engine sampled, so an answer
    cut at the cap ends without EOS; retokenized (the old rule) ends every answer with EOS."""
    from actors.learner_worker import LearnerWorker

    config = load_config("tiny", [f"run.dir={tmp_path}", "policy.objective=dpo", "reward.source=ranker",
                                  f"policy.answer_tokens={answer_tokens}"])
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)
    sampled = {(r.prompt, r.response_text): r for r in rollouts}
    trained = []
    monkeypatch.setattr(preference_phase, "token_batch",
                        lambda rows, pad_id: trained.extend(rows) or token_batch(rows, pad_id))
    metrics = learner.train_policy(rollouts, 1, groups)

    eos = learner.tokenizer.eos_token_id
    cut = [row for row in trained if (row.prompt, row.response_text) in sampled
           and not sampled[(row.prompt, row.response_text)].finished]
    assert cut, "the tiny model's answers should reach the cap"
    if answer_tokens == "sampled":
        assert metrics["preference_rows_sampled"] > 0.5
        for row in trained:
            if (row.prompt, row.response_text) in sampled:
                assert row.response_ids == sampled[(row.prompt, row.response_text)].response_ids
        assert all(row.response_ids[-1] != eos for row in cut)
    else:
        assert "preference_rows_sampled" not in metrics
        assert all(row.response_ids[-1] == eos for row in cut)


def _recorded(function, log: list, entry=lambda output: 1):
    """function, appending entry(its output) to `log` on every call (default 1: a call count)."""
    def recorded(*args, **kwargs):
        output = function(*args, **kwargs)
        log.append(entry(output))
        return output
    return recorded


def test_first_update_takes_the_reference_logprobs_without_a_reference_pass(tmp_path, tiny_model_dir, embedder):
    """Before the policy's first step it is the reference, so the first policy phase of a run
    skips the reference's forward pass: the update must equal the one with that pass (PPO, with
    its value model, from recomputed log-probs), and the second phase must run the pass again."""
    from actors.learner_worker import LearnerWorker

    config = load_config("tiny", [f"run.dir={tmp_path}", "policy.old_logprobs=recompute", "reward.source=ranker"])
    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)
    states, calls = {}, {}
    for shortcut in (True, False):
        learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
        assert learner.models.policy_is_reference
        learner.models.policy_is_reference = shortcut
        reference_passes = []
        learner.models.reference.forward = _recorded(learner.models.reference.forward, reference_passes)
        metrics = learner.train_policy(rollouts, 1, groups)
        calls[shortcut] = len(reference_passes)
        states[shortcut] = learner.policy_state()
        assert not learner.models.policy_is_reference and metrics["kl"] == pytest.approx(0.0, abs=1e-6)
        if shortcut:
            learner.train_policy(rollouts, 2, groups)
            assert len(reference_passes) > calls[True]
    assert calls[True] == 0 and calls[False] > 0
    for name, tensor in states[False].items():
        torch.testing.assert_close(states[True][name], tensor, rtol=0, atol=1e-6, msg=name)


def test_missing_eos_penalty_lowers_the_reward_of_answers_cut_at_the_cap(tmp_path, tiny_model_dir, embedder):
    import dataclasses

    from crowdless.learner.policy_gradient import sequence_rewards

    overrides = [f"run.dir={tmp_path}", "policy.objective=grpo", "reward.source=ranker"]
    rollouts, groups = _rollouts_and_groups(load_config("tiny", overrides), tiny_model_dir, embedder)
    rollouts = [dataclasses.replace(r, finished=i % 3 == 0) for i, r in enumerate(rollouts)]
    plain = sequence_rewards(load_config("tiny", overrides).reward, rollouts, groups)
    # the ranker's rewards n * s - 1 are centred within each prompt's answers
    assert plain.view(len(groups), -1).sum(dim=1).abs().max() < 1e-5
    penalty = load_config("tiny", overrides + ["reward.missing_eos_penalty=0.5"]).reward
    penalised = sequence_rewards(penalty, rollouts, groups)
    cut = torch.tensor([not r.finished for r in rollouts])
    torch.testing.assert_close(penalised, plain - 0.5 * cut.to(plain.dtype))


def test_response_logprobs_share_the_prompt_prefix_and_skip_the_head_over_prompts(tmp_path, tiny_model_dir, embedder):
    """The learner runs the prompts' shared prefix (the chat template's system prompt) once and
    the LM head only from the first response position on: its log-probs must still be every
    response token's log-softmax from a whole forward."""
    from actors.learner_worker import LearnerWorker

    config = load_config("tiny", [f"run.dir={tmp_path}", "policy.objective=grpo", "reward.source=ranker"])
    rollouts, _ = _rollouts_and_groups(config, tiny_model_dir, embedder)
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    assert learner.models.forward.head_on_responses_only
    batch = token_batch(rollouts, learner.pad_id)
    logit_positions = []
    learner.models.reference.forward = _recorded(learner.models.reference.forward, logit_positions,
                                          lambda output: output.logits.shape[1])
    with torch.no_grad():
        logprobs = learner.models.forward.logprobs(learner.models.reference, batch, torch.arange(len(rollouts)))
    width = max(len(r.prompt_ids) + len(r.response_ids) for r in rollouts)
    first_response_position = min(len(r.prompt_ids) for r in rollouts) - 1
    assert logit_positions == [1, width - first_response_position]  # the prefix's call, then the rows'
    for row, rollout in enumerate(rollouts):
        expected = torch.tensor(_hf_logprobs(learner.models.reference, rollout))
        torch.testing.assert_close(logprobs[row, :len(expected)], expected, rtol=0, atol=1e-5)


def test_bf16_learner_on_cpu_attends_eagerly_with_the_fused_kernels_results(tmp_path, tiny_model_dir, embedder):
    """In bf16 on a CPU the learner's models use transformers' eager attention (PyTorch's fused
    CPU kernel is slower there): its log-probs, with the shared prefix and padded rows, must be
    those of a whole forward of the same bf16 weights through the fused kernel ("sdpa")."""
    from transformers import AutoModelForCausalLM

    from actors.learner_worker import LearnerWorker

    config = load_config("tiny", [f"run.dir={tmp_path}", "policy.objective=grpo", "reward.source=ranker",
                                  "model.dtype=bfloat16"])
    rollouts, _ = _rollouts_and_groups(config, tiny_model_dir, embedder)
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    assert learner.models.reference.config._attn_implementation == "eager"
    assert learner.policy.module.config._attn_implementation == "eager"
    fused = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    with torch.no_grad():
        logprobs = learner.models.forward.logprobs(learner.models.reference, token_batch(rollouts, learner.pad_id),
                                            torch.arange(len(rollouts)))
    for row, rollout in enumerate(rollouts):
        expected = torch.tensor(_hf_logprobs(fused, rollout))
        torch.testing.assert_close(logprobs[row, :len(expected)], expected, rtol=0.02, atol=0)  # bf16: 3 digits


def test_learner_trains_reward_model_and_policy(config, tiny_model_dir, tmp_path, embedder):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from actors.learner_worker import LearnerWorker
    from crowdless.learner.replay import load_replay
    from algos.pairs import PreferencePair

    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    pairs = [PreferencePair(f"question {i}?", "a clear and correct answer.", f"zzz qqq {i} xx", 0, 1)
             for i in range(12)]
    untrained = learner.reward.evaluate_pairs(pairs)
    first = learner.train_reward(pairs, iteration=1)
    after_first = learner.reward.evaluate_pairs(pairs)
    second = learner.train_reward(pairs, iteration=2)
    assert after_first["rm_loss"] < untrained["rm_loss"]  # the reward model learns its pairs
    assert learner.reward.evaluate_pairs(pairs)["rm_loss"] < after_first["rm_loss"]
    # the training loss is each batch's before its step: the second pass starts where the first ended
    assert second["rm_loss"] < first["rm_loss"]
    assert 0 <= second["rm_accuracy"] <= 1 and 0 <= second["rm_train_accuracy"] <= 1
    assert second["rm_pairs_trained"] > 0

    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)
    initial = {k: v.clone() for k, v in learner.policy_state().items()}
    metrics = learner.train_policy(rollouts, 1, groups)
    for key in ("policy_loss", "value_loss", "kl", "reward_mean", "clipfrac"):
        assert math.isfinite(metrics[key]), key
    assert metrics["kl"] >= 0
    assert metrics["engine_logprob_gap"] < 1e-3  # sampler and learner agree on the old policy
    changed = learner.policy_state()
    assert any(not torch.equal(initial[k], changed[k]) for k in initial)
    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder, changed)
    second_metrics = learner.train_policy(rollouts, 2, groups)
    assert second_metrics["kl"] > 0  # the policy that sampled them moved away from the frozen reference
    assert second_metrics["engine_logprob_gap"] < 1e-3  # the synced sampler is the learner's policy

    final = learner.policy_state()
    learner.save_checkpoint(str(tmp_path))
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert torch.equal(policy.state_dict()["model.norm.weight"], final["model.norm.weight"].float())
    reward = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward_model")
    assert reward.config.num_labels == 1
    assert len(load_replay(tmp_path / "replay.jsonl")) == len(learner.replay) > 0


@pytest.mark.parametrize("objective,source", [("grpo", "ranker"), ("rloo", "ranker"), ("reinforce_pp", "ranker"),
                                              ("grpo", "reward_model"), ("dpo", "ranker"), ("listwise", "ranker")])
def test_learner_objectives(objective, source, config, tiny_model_dir, embedder, tmp_path):
    """Every registered objective trains the policy through the same learner; no value model is
    built for critic-free objectives, and no reward model where nothing scores with it."""
    from actors.learner_worker import LearnerWorker

    preference = objective in ("dpo", "listwise")
    config = config.model_copy(update={
        "policy": config.policy.model_copy(update={"objective": objective, "nll_coef": 0.5 * preference,
                                                   "forward_kl_coef": 0.5 * preference,
                                                   "length_coef": 0.05 * preference}),
        "reward": config.reward.model_copy(update={"source": source})})
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    assert config.trains_reward_model == (objective not in ("dpo", "listwise") and source == "reward_model")
    assert (learner.reward is not None) == config.trains_reward_model
    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)
    if learner.reward is None:
        assert learner.train_reward([], iteration=1) == {}
    initial = {k: v.clone() for k, v in learner.policy_state().items()}
    metrics = learner.train_policy(rollouts, 1, groups)
    assert math.isfinite(metrics["policy_loss"])
    if preference:  # the kl_coef and forward_kl_coef anchors: 0 on the first step (policy = reference)
        assert config.policy.kl_coef > 0 and 0 <= metrics["kl"] < 10 and 0 <= metrics["forward_kl"] < 10
        assert 0 < metrics["chosen_nll"] < 20  # the nll_coef anchor: the chosen answers' nats per token
    assert learner.value is None
    now = learner.policy_state()
    assert any(not torch.equal(initial[k], v) for k, v in now.items())
    # tied weights appear twice in a state dict, once in named_parameters: count over those
    names = [name for name, _ in learner.policy.module.named_parameters()]
    moved = sum(int((now[k] != initial[k]).sum()) for k in names) / sum(initial[k].numel() for k in names)
    assert metrics["policy_weights_moved"] == pytest.approx(moved) and moved > 0
    assert metrics["policy_drift"] == 0  # sampled by the start: no drift yet
    # the second phase measures the moved policy's KL to the start on the answers, before training
    policy_is_reference = learner.models.policy_is_reference
    rows = [(r.prompt, r.response_text) for r in rollouts]
    if preference:
        moved_logps, _ = learner.models.answer_logprobs(learner.policy.module, rows)
        start_logps, _ = learner.models.answer_logprobs(learner.models.reference, rows)
        expected = sum(moved_logps[row] - start_logps[row] for row in rows) / len(rows)
    # run.stop_at_drift reached (any drift reaches -inf): the phase measures the drift, trains nothing
    models_config = learner.models.config
    learner.models.config = models_config.model_copy(
        update={"run": models_config.run.model_copy(update={"stop_at_drift": float("-inf")})})
    before = {k: v.clone() for k, v in learner.policy_state().items()}
    stopped = learner.train_policy(rollouts, 2, groups)
    assert stopped["stopped_at_drift"] and "policy_loss" not in stopped
    assert all(torch.equal(before[k], v) for k, v in learner.policy_state().items())
    learner.models.config = models_config
    metrics = learner.train_policy(rollouts, 2, groups)
    assert not policy_is_reference and metrics["policy_drift"] != 0
    assert stopped["policy_drift"] == pytest.approx(metrics["policy_drift"], rel=1e-4, abs=1e-5)
    if preference:
        assert metrics["policy_drift"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    learner.save_checkpoint(str(tmp_path))
    assert (tmp_path / "policy" / "config.json").exists() and not (tmp_path / "value_model").exists()
    assert (tmp_path / "reward_model").exists() == config.trains_reward_model


def test_weights_moved_counts_what_the_forward_sees(config, tiny_model_dir):
    """policy_weights_moved is the share of the policy's working weights that differ from the
    reference's. In bf16 a change smaller than half a rounding step is no change at all: the
    reason a short bf16 run at a small learning rate barely moves (docs/experiments.md E19)."""
    from actors.learner_worker import LearnerWorker

    config = config.model_copy(update={"model": config.model.model_copy(update={"dtype": "bfloat16"})})
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    weights = dict(learner.policy.module.named_parameters())
    total = sum(w.numel() for w in weights.values())
    assert learner.models.weights_moved() == {"policy_weights_moved": 0.0}
    with torch.no_grad():
        for weight in weights.values():  # a float32 step of 1e-4 of each weight, then rounded to bf16
            weight.copy_((weight.float() * (1 + 1e-4)).to(weight.dtype))
    assert learner.models.weights_moved() == {"policy_weights_moved": 0.0}
    weight = next(w for w in weights.values() if w.dim() == 2)
    with torch.no_grad():
        weight[0, :5] += 1.0
    assert learner.models.weights_moved()["policy_weights_moved"] == pytest.approx(5 / total)


def test_reference_logprob_of_each_distinct_row_once_equals_each_row_alone(config, tiny_model_dir):
    """dpo and listwise take the frozen reference's sequence and token log-probs of each distinct
    (prompt, answer) once per phase, in length-sorted minibatches; each must be the row's own, as a forward
    pass over that row alone gives it, and a row repeated across pairs is computed once."""
    from actors.learner_worker import LearnerWorker
    from algos.objectives import sequence_logprobs

    config = config.model_copy(update={"policy": config.policy.model_copy(update={"objective": "dpo"})})
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    rows = [("What is an atom?", "The smallest unit of matter."), ("What is an atom?", "zz qq"),
            ("What is an atom?", "The smallest unit of matter."), ("Hi", "Hello there, how can I help you today?"),
            ("Hi", "The smallest unit of matter.")]
    forwards = []
    original = learner.models.forward.logprobs
    learner.models.forward.logprobs = lambda model, batch, part: forwards.append(len(part)) or original(model, batch, part)
    together, tokens = learner.models.answer_logprobs(learner.models.reference, rows)
    learner.models.forward.logprobs = original
    assert sum(forwards) == len(set(rows)) == len(together) == len(tokens) == 4
    for row in rows:
        batch = token_batch(learner.models.text_rows([row]), learner.pad_id)
        alone_tokens = learner.models.forward.logprobs(learner.models.reference, batch, torch.arange(1))
        alone = sequence_logprobs(alone_tokens, batch["mask"])
        assert together[row] == pytest.approx(float(alone), abs=1e-4)
        # each answer token's own log-prob, for the kl_coef anchor of dpo and listwise
        assert torch.allclose(tokens[row], alone_tokens[0, :int(batch["mask"].sum())], atol=1e-4)
    assert together[rows[0]] != pytest.approx(together[rows[4]], abs=1e-2)  # the prompt matters


def test_implicit_reward_is_beta_times_the_policy_reference_log_ratio(config, tiny_model_dir):
    """The held-out agreement check orders a dpo run's answers by beta * log(pi / pi_ref): zero
    for every answer while the policy is the reference, each row's own log-ratio once it moved."""
    from actors.learner_worker import LearnerWorker
    from algos.objectives import sequence_logprobs

    config = config.model_copy(update={"policy": config.policy.model_copy(update={"objective": "dpo",
                                                                                   "beta": 0.5})})
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    prompts = ["What is an atom?", "What is an atom?", "Hi"]
    answers = ["The smallest unit of matter.", "zz qq", "Hello there, how can I help you today?"]
    assert learner.implicit_rewards(prompts, answers) == [0.0, 0.0, 0.0]
    with torch.no_grad():
        for parameter in learner.policy.module.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    moved = learner.implicit_rewards(prompts, answers)
    for prompt, answer, reward in zip(prompts, answers, moved):
        batch = token_batch(learner.models.text_rows([(prompt, answer)]), learner.pad_id)
        with torch.no_grad():
            alone = [sequence_logprobs(learner.models.forward.logprobs(model, batch, torch.arange(1)), batch["mask"])
                     for model in (learner.policy.module, learner.models.reference)]
        assert reward == pytest.approx(0.5 * float(alone[0] - alone[1]), abs=1e-4)
    assert len(set(moved)) == 3 and all(reward != 0 for reward in moved)


@pytest.mark.parametrize(("lora_rank", "zero_stage"), [(0, 0), (4, 0), (0, 2)])
def test_resumed_learner_continues_exactly(lora_rank, zero_stage, tiny_model_dir, tmp_path, embedder):
    """Iterations 1-3 in one learner, against 1-2, a checkpoint, and 3 in a new learner built from
    it (as `--resume` does): the same iteration-3 weights for the policy, reward and value models.
    Without the optimizer state the new learner's Adam moments restart and the weights differ.
    With LoRA the checkpoint's HF folders hold merged weights, and the training state the
    adapters and the unmerged base weights. ZeRO-2 keeps its own flat copy of the weights and
    moments, stage 0 the optimizer's: both must come back."""
    from actors.learner_worker import LearnerWorker
    from crowdless.learner.replay import load_replay

    config = load_config("tiny", [f"run.dir={tmp_path / 'run'}", f"learner.lora_rank={lora_rank}",
                                  f"learner.zero_stage={zero_stage}"])

    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)

    def iterate(learner, iteration):
        learner.train_reward(iteration_pairs(iteration), iteration)
        learner.train_policy(rollouts, iteration, groups)

    def weights(learner):
        return {name: full_state_dict(engine, learner.config.learner) for name, engine, _ in learner._engines()}

    uninterrupted = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    for iteration in (1, 2):
        iterate(uninterrupted, iteration)
    uninterrupted.save_checkpoint(str(tmp_path))
    iterate(uninterrupted, 3)
    expected = weights(uninterrupted)

    def resumed(restore: bool):
        learner = LearnerWorker(config, str(tmp_path / "policy"), tiny_model_dir, str(tmp_path / "reward_model"),
                                str(tmp_path / "value_model"), load_replay(tmp_path / "replay.jsonl"))
        if restore:
            assert learner.load_training_state(str(tmp_path)) == ["policy", "reward_model", "value_model"]
        iterate(learner, 3)
        return weights(learner)

    exact = resumed(restore=True)
    assert exact.keys() == expected.keys() == {"policy", "reward_model", "value_model"}
    for model in expected:
        for name, tensor in expected[model].items():
            torch.testing.assert_close(exact[model][name], tensor, rtol=0, atol=1e-6, msg=f"{model}.{name}")
    restarted = resumed(restore=False)
    gap = max((restarted["policy"][n] - t).abs().max().item() for n, t in expected["policy"].items())
    assert gap > 1e-4  # the check above would catch a resume that loses the moments


def test_a_checkpoint_of_another_zero_stage_restarts_the_moments_instead_of_failing(tiny_model_dir, tmp_path):
    """Each ZeRO stage saves the optimizer in its own layout, and DeepSpeed cannot load one into
    another: a run resumed under another learner.zero_stage (e.g. a ZeRO-2 checkpoint from before
    `auto` chose stage 0 for one rank) keeps the weights and restarts the moments."""
    from actors.learner_worker import LearnerWorker
    from algos.pairs import PreferencePair

    pairs = [PreferencePair(f"question {i}?", "a clear answer.", f"zzz {i}", 0, 1) for i in range(8)]
    for saved, resumed in ((2, 0), (0, 2)):
        overrides = [f"run.dir={tmp_path / 'run'}", "reward.source=reward_model"]
        learner = LearnerWorker(load_config("tiny", overrides + [f"learner.zero_stage={saved}"]),
                                tiny_model_dir, tiny_model_dir, tiny_model_dir)
        learner.train_reward(pairs, 1)
        checkpoint = tmp_path / f"stage-{saved}"
        learner.save_checkpoint(str(checkpoint))
        again = LearnerWorker(load_config("tiny", overrides + [f"learner.zero_stage={resumed}"]),
                              str(checkpoint / "policy"), tiny_model_dir, str(checkpoint / "reward_model"))
        assert again.load_training_state(str(checkpoint)) == []
        assert again.train_reward(pairs, 2)["rm_pairs_trained"] > 0  # and it trains on
        same = LearnerWorker(load_config("tiny", overrides + [f"learner.zero_stage={saved}"]),
                             str(checkpoint / "policy"), tiny_model_dir, str(checkpoint / "reward_model"))
        assert same.load_training_state(str(checkpoint)) == ["policy", "reward_model"]


def test_seeded_rollouts_whose_prompts_exceed_one_engine_step(config, tiny_model_dir):
    """vLLM's CPU scheduler splits prefills over steps once a batch's prompt tokens pass its token
    budget (4096), and rewinding a seeded request's generator after a split crashes on CPU
    ("CPU Generator does not use offset"): 16 prompts x 8 answers on SmolLM2 did. The engine
    arguments keep prompts whole, so seeded rollouts of any batch size run."""
    from actors.rollout_worker import RolloutWorker

    long_prompts = [f"question {i}: " + "why is the sky blue and the grass green? " * 8 for i in range(8)]
    batch = config.rollout.model_copy(update={"prompts_per_iteration": 8, "samples_per_prompt": 16})
    worker = RolloutWorker(tiny_model_dir, config.model, batch, seed=0)  # 128 sequences in flight
    prompt_tokens = len(worker.generate(long_prompts[:1], n=1, greedy=True)[0][0].prompt_ids)
    assert prompt_tokens * len(long_prompts) * 16 >= 2 * 4096  # two steps of prompt tokens at least
    samples = worker.generate(long_prompts, seed=5)
    assert [len(answers) for answers in samples] == [16] * len(long_prompts)
    assert _texts(worker.generate(long_prompts, seed=5)) == _texts(samples)


def test_two_learner_ranks_take_the_step_one_learner_takes(ray_local, tmp_path, tiny_model_dir, embedder):
    """The same pairs and rollouts through one learner and through a 2-rank group (gloo, ZeRO-2,
    each rank half of every minibatch; uneven halves, as 3 pairs or odd token counts split): the
    same losses (relative 1e-4), and the same policy, reward and value weights after the reward
    model and a PPO phase: more than 99.9% of each model's weights within 1e-6, all within two
    Adam steps (2 x lr). The gradients differ only by float32 sums taken in another order, but
    Adam divides by sqrt(v): where a gradient is near zero that noise can move a weight by up to
    lr per step (measured: 90 of 12.9M policy weights beyond 1e-6, at most 1.0e-4; 793 of 6.6M
    value weights, at most 1.6e-3). Without the share weighting of the ranks' losses 8.1M of the
    12.9M policy weights move beyond 1e-6. Then the group's checkpoint restores into a new 2-rank
    group, and not into one learner."""
    from safetensors.torch import load_file

    from actors.learner_worker import LearnerWorker
    from algos.pairs import PreferencePair
    from cluster.learner_group import LearnerGroup, LearnerGroupError
    from cluster.weight_sync import torch_state

    overrides = [f"run.dir={tmp_path}", "reward.batch_size=3", "resources.learner_cpus=1"]
    config = load_config("tiny", overrides)
    group_config = load_config("tiny", overrides + ["resources.learner_workers=2"])
    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)
    pairs = [PreferencePair(f"question {i}?", "a clear answer." * (1 + i % 3), f"zz {i} qq", 0, 1) for i in range(10)]
    args = (tiny_model_dir, tiny_model_dir, tiny_model_dir)

    single = LearnerWorker(config, *args)
    expected = {**single.train_reward(pairs, 1), **single.train_policy(rollouts, 1, groups)}
    single.save_checkpoint(str(tmp_path / "single"))
    group = LearnerGroup(group_config, LearnerWorker, (group_config, *args, None, None), env={})
    try:
        assert len(group.nodes) == 2
        got = {**group.run("train_reward", pairs, 1), **group.run("train_policy", rollouts, 1, groups)}
        group.run("save_checkpoint", str(tmp_path / "group"))
        policy = torch_state(ray_local.get(group.policy_state_ref()))  # as the rollout workers read it
    finally:
        group.shutdown()
    compared = [key for key in expected if "second" not in key]
    assert {"rm_loss", "rm_accuracy", "policy_loss", "value_loss", "kl", "engine_logprob_gap"} <= set(compared)
    for key in compared:
        assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
    for model in ("policy", "reward_model", "value_model"):
        mine, theirs = (load_file(tmp_path / run / model / "model.safetensors") for run in ("single", "group"))
        assert mine.keys() == theirs.keys()
        gaps = torch.cat([(theirs[name] - tensor).abs().flatten() for name, tensor in mine.items()])
        assert (gaps <= 1e-6).float().mean() > 0.999 and gaps.max() <= 2 * config.policy.lr, (model, gaps.max())
    saved = load_file(tmp_path / "group" / "policy" / "model.safetensors")  # a tied lm_head is not saved
    assert saved.keys() <= policy.keys() and all(torch.equal(policy[name], saved[name]) for name in saved)
    assert (tmp_path / "group" / "training_state" / "rng-rank1.pt").exists()

    folder = str(tmp_path / "group")
    resumed = LearnerGroup(group_config, LearnerWorker, (group_config, f"{folder}/policy", tiny_model_dir,
                                                         f"{folder}/reward_model", f"{folder}/value_model", None), env={})
    try:
        assert resumed.run("load_training_state", folder) == ["policy", "reward_model", "value_model"]
        ray_local.kill(resumed.ranks[1])  # a rank dies: the next call ends at once, naming it
        with pytest.raises(LearnerGroupError, match="learner rank 1 of 2 failed"):
            resumed.run("train_policy", rollouts, 2, groups)
    finally:
        resumed.shutdown()
    assert single.load_training_state(folder) == []  # saved by two ranks: one rank cannot take their moments


def test_lora_trains_only_the_adapters_and_exports_merged_weights(tmp_path, tiny_model_dir, embedder):
    """learner.lora_rank: only the adapters (and the reward and value models' score heads) train,
    the frozen weights stay as loaded, and the weights that leave the learner (weight sync,
    checkpoint) are merged under the plain model's names: transformers loads the checkpoint and
    gives the learner's own outputs."""
    from transformers import AutoModelForCausalLM

    from actors.learner_worker import LearnerWorker
    from algos.pairs import PreferencePair

    config = load_config("tiny", [f"run.dir={tmp_path}", "learner.lora_rank=4", "policy.lr=1e-2", "reward.lr=1e-2"])
    rollouts, groups = _rollouts_and_groups(config, tiny_model_dir, embedder)
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    start = learner.policy_state()
    frozen = {n: p.detach().clone() for n, p in learner.policy.module.named_parameters() if not p.requires_grad}
    for engine in (learner.policy, learner.reward.engine):
        trainable = [n for n, p in engine.module.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n or n.startswith("score.") for n in trainable)
    learner.train_reward([PreferencePair(f"q {i}?", "a clear answer.", f"zz {i}", 0, 1) for i in range(8)], 1)
    learner.train_policy(rollouts, 1, groups)
    assert all(torch.equal(p, frozen[n]) for n, p in learner.policy.module.named_parameters() if n in frozen)
    after = learner.policy_state()
    assert after.keys() == start.keys()
    assert max((after[n] - start[n]).abs().max().item() for n in start) > 1e-4
    learner.save_checkpoint(str(tmp_path / "checkpoint"))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint" / "policy")
    ids = torch.tensor([rollouts[0].prompt_ids + rollouts[0].response_ids])
    with torch.no_grad():
        torch.testing.assert_close(saved(input_ids=ids).logits, learner.policy.module(input_ids=ids).logits,
                                   rtol=0, atol=1e-5)
