"""Prompt and answer tokenisation, shared by rollouts, the reward model and serving."""

from __future__ import annotations

import zlib


def encode_prompt(tokenizer, prompt: str, use_chat_template: bool, max_tokens: int) -> list[int]:
    """Token ids of a prompt ready for generation: the chat template applied where the
    tokenizer has one, then left-truncated so the end of the prompt survives."""
    if use_chat_template and tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
    else:
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return list(ids[-max_tokens:])


def encode_answer(tokenizer, answer: str, max_tokens: int, eos_when_cut: bool = True) -> list[int]:
    """At most max_tokens answer tokens, ending with EOS as a finished answer does. An answer longer
    than that is cut: to max_tokens - 1 tokens and EOS (eos_when_cut, what the learner has always
    trained on), or to max_tokens tokens without EOS (a cut answer is not a finished one)."""
    ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if len(ids) < max_tokens or eos_when_cut:
        return ids[: max_tokens - 1] + [tokenizer.eos_token_id]
    return ids[:max_tokens]


def prompt_seed(seed: int, prompt: str) -> int:
    """A sampling seed for one prompt, stable across processes and machines (Python's hash() of
    a str is salted per process): the same (seed, prompt) gives the same answers on any worker."""
    return zlib.crc32(f"{seed}\0{prompt}".encode())
