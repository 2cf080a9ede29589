"""Answer-versus-reference metrics (pure functions) and the paired bootstrap.

Per answer, all on a 0-100 scale except the 0-1 token F1 and exact match:
    bleu          sacrebleu sentence BLEU (exponential smoothing, sacrebleu's default), 13a tokens
    chrf          sacrebleu sentence chrF (character 6-grams, beta 2)
    gleu          nltk sentence GLEU (Wu et al. 2016) x 100, on lowercased word tokens
    meteor        nltk METEOR (Banerjee & Lavie 2005) x 100 with WordNet synonyms, or
    meteor_nosyn  the same without synonym matching (exact and stem matches only) where no
                  WordNet database is found: reported under its own name, never as METEOR
    token_f1      SQuAD token F1 after normalisation (lowercase, no punctuation or articles)
    exact_match   1.0 when the normalised answer equals the normalised reference
The paper reports BLEU / GLEU / METEOR in percent (e.g. 2.40 / 4.90 / 10.77): same scale here.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)


def chrf(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score)


def gleu(hypothesis: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return 100.0 * float(sentence_gleu([_words(reference)], _words(hypothesis)))


class _NoSynonyms:
    """Stands in for WordNet: METEOR then matches exact words and stems only."""

    def synsets(self, *args, **kwargs):
        return []


def wordnet_roots() -> list[Path]:
    """Where a WordNet 3.0 database may lie: $CROWDLESS_WORDNET, Debian's wordnet-base, and the
    copy `make setup` unpacks into .venv/wordnet when Debian's is not installed."""
    roots = [os.environ.get("CROWDLESS_WORDNET", ""), "/usr/share/wordnet",
             str(Path(__file__).resolve().parent.parent / ".venv" / "wordnet" / "usr" / "share" / "wordnet")]
    return [Path(r) for r in roots if r]


# WordNet 3.0's lexicographer file names: nltk needs this small index, Debian's package leaves it out.
_LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
             "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
             "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession "
             "noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time "
             "verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
             "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
             "verb.social verb.stative verb.weather adj.ppl").split()
_LEX_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def _complete_wordnet(root: Path) -> Path:
    """root itself when it has `lexnames`, else a cached copy of it plus lexnames (copies, not
    links: nltk refuses files that resolve outside the folder it reads)."""
    if (root / "lexnames").exists():
        return root
    cache = Path(os.environ.get("CROWDLESS_CACHE", Path.home() / ".cache" / "crowdless")) / "wordnet"
    cache.mkdir(parents=True, exist_ok=True)
    for file in root.iterdir():
        if file.is_file() and not (cache / file.name).exists():
            shutil.copyfile(file, cache / file.name)
    (cache / "lexnames").write_text("".join(
        f"{i:02d}\t{name}\t{_LEX_POS[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)))
    return cache


def load_wordnet():
    """An nltk WordNet reader over the first database found, or None (then METEOR has no synonyms)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class OfflineWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # the multilingual mapping wants nltk's downloaded corpus; METEOR needs none

    for root in wordnet_roots():
        if (root / "data.noun").exists():
            folder = _complete_wordnet(root)
            if str(folder) not in nltk.data.path:  # nltk only reads folders on its data path
                nltk.data.path.append(str(folder))
            with warnings.catch_warnings():  # "multilingual functions are not available": not used
                warnings.simplefilter("ignore")
                return OfflineWordNet(str(folder), None)
    return None


def meteor_name(wordnet) -> str:
    return "meteor" if wordnet is not None else "meteor_nosyn"


def meteor(hypothesis: str, reference: str, wordnet) -> float:
    """METEOR x 100; with wordnet None, synonym matching is off (report it as meteor_nosyn)."""
    from nltk.translate.meteor_score import meteor_score

    return 100.0 * float(meteor_score([_words(reference)], _words(hypothesis),
                                      wordnet=wordnet if wordnet is not None else _NoSynonyms()))


def token_f1(hypothesis: str, reference: str) -> float:
    hyp, ref = normalize_answer(hypothesis).split(), normalize_answer(reference).split()
    if not hyp or not ref:
        return float(hyp == ref)
    common = sum((Counter(hyp) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(hypothesis: str, reference: str) -> float:
    return float(normalize_answer(hypothesis) == normalize_answer(reference))


def answer_scores(hypothesis: str, reference: str, wordnet) -> dict[str, float]:
    """Every per-answer surface metric above, by name."""
    return {
        "bleu": bleu(hypothesis, reference),
        "chrf": chrf(hypothesis, reference),
        "gleu": gleu(hypothesis, reference),
        meteor_name(wordnet): meteor(hypothesis, reference, wordnet),
        "token_f1": token_f1(hypothesis, reference),
        "exact_match": exact_match(hypothesis, reference),
    }


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all answers / all n-grams (Li et al. 2016); 0 with no n-grams."""
    grams = [tuple(words[i:i + n]) for words in map(_words, texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def paired_bootstrap(baseline: np.ndarray, system: np.ndarray, rng: np.random.Generator,
                     resamples: int = 1000, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of system - baseline over prompts [N], with a percentile bootstrap interval: each
    resample draws N prompts with replacement and averages both systems on the same prompts."""
    differences = np.asarray(system, dtype=float) - np.asarray(baseline, dtype=float)
    if differences.shape != np.shape(baseline) or differences.ndim != 1 or len(differences) == 0:
        raise ValueError("baseline and system need the same non-empty [N] shape")
    draws = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(differences.mean()), float(low), float(high)
