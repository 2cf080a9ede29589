"""Computing the rows' shared prefix once gives the outputs and gradients of the full forward."""

import pytest
import torch

from crowdless.models.reward import pad_right
from crowdless.models.shared_prefix import MIN_SHARED_TOKENS, forward_sharing_prefix, shared_prefix_length

SYSTEM = list(range(100, 100 + MIN_SHARED_TOKENS + 4))


def _rows():
    """Three right-padded rows of different lengths after a common prefix."""
    return pad_right([SYSTEM + [7, 8, 9], SYSTEM + [7, 5], SYSTEM + [3, 4, 5, 6, 7]], value=0)


def test_shared_prefix_length_stops_at_the_first_difference_and_at_the_limit():
    ids, _ = _rows()
    assert shared_prefix_length(ids, limit=100) == len(SYSTEM)
    assert shared_prefix_length(ids, limit=len(SYSTEM) - 1) == len(SYSTEM) - 1
    assert shared_prefix_length(ids, limit=MIN_SHARED_TOKENS - 1) == 0  # too short to be worth a call
    assert shared_prefix_length(ids[:1], limit=100) == 0


def _tiny_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def test_shared_prefix_forward_gives_the_full_forward_outputs_and_gradients(tiny_model_dir):
    ids, attention = _rows()
    prefix = shared_prefix_length(ids, limit=len(SYSTEM))
    results = {}
    for shared in (False, True):
        model = _tiny_model(tiny_model_dir)
        logits = forward_sharing_prefix(model, ids, attention, prefix if shared else 0,
                                        logits_to_keep=ids.shape[1] - prefix).logits
        real = attention[:, prefix:, None].float()
        (logits * real).square().mean().backward()
        results[shared] = logits.detach() * real, {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-5)
    for name, gradient in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prefix_forward_of_a_base_model_covers_the_positions_after_the_prefix(tiny_model_dir):
    ids, attention = _rows()
    model = _tiny_model(tiny_model_dir).model
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attention).last_hidden_state
        shared = forward_sharing_prefix(model, ids, attention, len(SYSTEM)).last_hidden_state
    assert shared.shape[1] == ids.shape[1] - len(SYSTEM)
    real = attention[:, len(SYSTEM):, None].float()
    torch.testing.assert_close(shared * real, full[:, len(SYSTEM):] * real, rtol=1e-4, atol=1e-5)


def test_reward_scores_and_their_gradients_are_the_same_with_the_prefix_shared(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from crowdless.models.reward import sequence_scores

    ids, attention = _rows()
    results = {}
    for shared in (False, True):
        torch.manual_seed(0)  # the same fresh score head both times
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
        scores = sequence_scores(model, ids, attention, share_prefix=shared)
        scores.square().sum().backward()
        results[shared] = scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-5)
    for name, gradient in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_training_with_gradient_checkpointing_refuses_a_shared_prefix(tiny_model_dir):
    ids, attention = _rows()
    model = _tiny_model(tiny_model_dir)
    model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(ValueError, match="gradient checkpointing"):
        forward_sharing_prefix(model, ids, attention, len(SYSTEM))


@pytest.mark.parametrize("head_on_responses_only", [False, True])
def test_the_response_forward_gives_each_positions_distribution_and_its_tokens_log_prob(
        tiny_model_dir, head_on_responses_only):
    from crowdless.data.records import Rollout
    from crowdless.learner.tokens import ResponseForward, token_batch

    rows = [Rollout("a", SYSTEM + [7], [8, 9, 2], "", [], True), Rollout("b", SYSTEM + [3, 4], [5], "", [], True)]
    batch = token_batch(rows, pad_id=0)
    forward = ResponseForward(torch.device("cpu"), share_prefix=True, head_on_responses_only=head_on_responses_only)
    model = _tiny_model(tiny_model_dir)
    with torch.no_grad():
        plain = forward.logprobs(model, batch, torch.arange(2))
        logprobs, logdists = forward.logprobs(model, batch, torch.arange(2), distributions=True)
    mask = batch["mask"].bool()
    torch.testing.assert_close(logprobs[mask], plain[mask], rtol=1e-5, atol=1e-5)
    assert logdists.shape == (*plain.shape, model.config.vocab_size)
    torch.testing.assert_close(logdists.exp().sum(dim=-1)[mask], torch.ones(int(mask.sum())))
    tokens = torch.tensor([[8, 9, 2], [5, 0, 0]])
    torch.testing.assert_close(logdists.gather(2, tokens[:, :, None]).squeeze(2)[mask], plain[mask],
                               rtol=1e-5, atol=1e-5)
