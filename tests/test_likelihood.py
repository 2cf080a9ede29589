"""ref_logprob's teacher forcing: the mean per-token log-probability of given answers."""

import pytest
import torch

from crowdless.models.likelihood import answer_logprobs
from crowdless.models.prompts import encode_answer, encode_prompt

pytestmark = pytest.mark.unit


def test_a_cut_answer_keeps_its_tokens_and_gets_no_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "one two three four five six seven eight nine ten"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert encode_answer(tokenizer, text, 4, eos_when_cut=False) == ids[:4]
    assert encode_answer(tokenizer, text, 4) == ids[:3] + [tokenizer.eos_token_id]  # the learner's old rule
    whole = encode_answer(tokenizer, text, len(ids) + 1, eos_when_cut=False)
    assert whole == ids + [tokenizer.eos_token_id]


def test_answer_logprobs_equals_one_row_at_a_time(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["What is the capital of France?", "Hi", "Tell me a long story about a dragon and a knight."]
    answers = ["Paris.", "Hello there, how are you doing today?", "Once"]
    options = dict(use_chat_template=True, max_prompt_tokens=64, max_answer_tokens=8)
    batched = answer_logprobs(model, tokenizer, prompts, answers, batch_size=3, **options)
    for prompt, answer, value in zip(prompts, answers, batched):
        prompt_ids = encode_prompt(tokenizer, prompt, True, 64)
        answer_ids = encode_answer(tokenizer, answer, 8, eos_when_cut=False)
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        expected = sum(logprobs[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(answer_ids))
        assert value == pytest.approx(expected / len(answer_ids), abs=1e-4)
    assert all(v < 0 for v in batched)


def test_sums_and_the_implicit_reward_of_a_policy_against_itself(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crowdless.models.likelihood import ImplicitReward

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    options = dict(use_chat_template=True, max_prompt_tokens=64, max_answer_tokens=8)
    means = answer_logprobs(model, tokenizer, ["Hi"], ["Hello there, how are you doing?"], **options)
    sums = answer_logprobs(model, tokenizer, ["Hi"], ["Hello there, how are you doing?"], per_token=False, **options)
    assert sums[0] == pytest.approx(8 * means[0], rel=1e-5)  # cut at 8 tokens, no EOS
    reward = ImplicitReward(tiny_model_dir, tiny_model_dir, 0.1, torch.float32, **options)
    assert reward.score(["Hi", "Q"], ["Hello", "A"]) == pytest.approx([0.0, 0.0])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    model.save_pretrained(tmp_path / "moved")
    tokenizer.save_pretrained(tmp_path / "moved")
    reward.load_policy(str(tmp_path / "moved"))
    expected = 0.1 * (answer_logprobs(model, tokenizer, ["Hi"], ["Hello"], per_token=False, **options)[0]
                      - answer_logprobs(reward.reference, tokenizer, ["Hi"], ["Hello"], per_token=False, **options)[0])
    assert reward.score(["Hi"], ["Hello"])[0] == pytest.approx(expected, abs=1e-4) and expected != 0


def test_the_logprob_shift_splits_eos_first_token_and_positions():
    from crowdless.models.likelihood import logprob_shift_by_position

    eos = 9
    before = [([5, 6, eos], [-1.0, -2.0, -3.0]), ([7, eos], [-1.0, -1.0])]
    after = [([5, 6, eos], [-2.0, -2.5, -9.0]), ([7, eos], [-1.0, -5.0])]
    shift = logprob_shift_by_position(before, after, eos, last_position=1)
    assert shift["eos"] == pytest.approx((-6.0 - 4.0) / 2)
    assert shift["first"] == pytest.approx((-1.0 + 0.0) / 2)
    assert shift["rest"] == pytest.approx(-0.5)
    assert shift["position_0"] == pytest.approx(-0.5) and shift["position_1+"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="same answers"):
        logprob_shift_by_position(before, after[::-1], eos)
