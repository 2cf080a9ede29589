"""Noise injection: clearly-worse copies of low-ranked answers (the paper, section 3.3).

Three kinds:
    ngram     delete an n-gram, replace it with a random n-gram, or insert a random n-gram (n < 4)
    negation  remove the existing negations, or add "not" after an auxiliary verb
              (or before a random word when there is none: no POS tagger offline, choice)
    shuffle   shuffle the order of the sentences (needs at least two sentences)

Every function takes the random generator as an argument. A kind that cannot
apply (shuffle on one sentence, anything on empty text) returns the text
unchanged; `noisy_negative` only picks kinds that apply.
"""

from __future__ import annotations

import re

import numpy as np

NOISE_KINDS = ("ngram", "negation", "shuffle")

# Random n-grams are drawn from common English words, so the result stays text-like.
FILLER_WORDS = (
    "the of and to in is was it for on with as at by from this that be are or an "
    "not but have had they you which one all were their there been would will more "
    "when who if out so can what about up said into some than them other time only "
    "could new these two may first then do any like my now over such our man me even "
    "most made after also did many before must through back years where much your way"
).split()

_NEGATION = re.compile(r"\b(not|never|no)\b\s*|n't\b", re.IGNORECASE)
_AUXILIARIES = re.compile(
    r"\b(is|are|was|were|am|can|could|will|would|should|must|may|might|do|does|did|has|have|had)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _random_ngram(n: int, rng: np.random.Generator) -> list[str]:
    return [FILLER_WORDS[i] for i in rng.integers(len(FILLER_WORDS), size=n)]


def _ngram_edit(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    n = int(rng.integers(1, 4))
    operations = ["insert"] + (["delete", "replace"] if len(words) > n else [])
    operation = operations[int(rng.integers(len(operations)))]
    if operation == "insert":
        at = int(rng.integers(len(words) + 1))
        words[at:at] = _random_ngram(n, rng)
    else:
        at = int(rng.integers(len(words) - n + 1))
        words[at : at + n] = _random_ngram(n, rng) if operation == "replace" else []
    return " ".join(words)


def _negate(text: str, rng: np.random.Generator) -> str:
    if _NEGATION.search(text):
        return re.sub(r"\s{2,}", " ", _NEGATION.sub("", text)).strip()
    auxiliary = _AUXILIARIES.search(text)
    if auxiliary:
        return f"{text[: auxiliary.end()]} not{text[auxiliary.end():]}"
    words = text.split()
    at = int(rng.integers(1, len(words) + 1)) if len(words) > 1 else 0
    return " ".join(words[:at] + ["not"] + words[at:])


def _shuffle_sentences(text: str, rng: np.random.Generator) -> str:
    sentences = split_sentences(text)
    if len(set(sentences)) < 2:
        return text
    shuffled = sentences
    while shuffled == sentences:
        shuffled = [sentences[i] for i in rng.permutation(len(sentences))]
    return " ".join(shuffled)


_APPLY = {"ngram": _ngram_edit, "negation": _negate, "shuffle": _shuffle_sentences}


def applicable_kinds(text: str, kinds: tuple[str, ...] = NOISE_KINDS) -> list[str]:
    if not text.strip():
        return []
    return [k for k in kinds if k != "shuffle" or len(set(split_sentences(text))) > 1]


def add_noise(text: str, kind: str, rng: np.random.Generator) -> str:
    """Return a noised copy of `text`; unchanged where `kind` cannot apply."""
    if kind not in _APPLY:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    if kind not in applicable_kinds(text):
        return text
    return _APPLY[kind](text, rng)


def noisy_negative(
    text: str, rng: np.random.Generator, kinds: tuple[str, ...] = NOISE_KINDS
) -> str:
    """Noise `text` with a kind picked uniformly among those of `kinds` that apply."""
    usable = applicable_kinds(text, kinds)
    if not usable:
        return text
    return add_noise(text, usable[int(rng.integers(len(usable)))], rng)
