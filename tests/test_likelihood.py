"""ref_logprob's teacher forcing: the mean per-token log-probability of given answers."""

import pytest
import torch

from crowdless.likelihood import mean_token_logprobs
from crowdless.prompts import encode_answer, encode_prompt

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


def test_mean_token_logprobs_equals_one_row_at_a_time(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["What is the capital of France?", "Hi", "Tell me a long story about a dragon and a knight."]
    answers = ["Paris.", "Hello there, how are you doing today?", "Once"]
    options = dict(use_chat_template=True, max_prompt_tokens=64, max_answer_tokens=8)
    batched = mean_token_logprobs(model, tokenizer, prompts, answers, batch_size=3, **options)
    for prompt, answer, value in zip(prompts, answers, batched):
        prompt_ids = encode_prompt(tokenizer, prompt, True, 64)
        answer_ids = encode_answer(tokenizer, answer, 8, eos_when_cut=False)
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        expected = sum(logprobs[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(answer_ids))
        assert value == pytest.approx(expected / len(answer_ids), abs=1e-4)
    assert all(v < 0 for v in batched)
