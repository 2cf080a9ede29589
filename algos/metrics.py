"""Answer-versus-reference metrics (pure functions) and the paired bootstrap.

Per answer, against one reference or several (a prompt the data repeats with different replies),
all on a 0-100 scale except the 0-1 token F1, exact match and loop flag:
    bleu          sacrebleu sentence BLEU (exponential smoothing, sacrebleu's default), 13a tokens
    chrf          sacrebleu sentence chrF (character 6-grams, beta 2)
    gleu          nltk sentence GLEU (Wu et al. 2016) x 100, on lowercased word tokens
    meteor        nltk METEOR (Banerjee & Lavie 2005) x 100 with WordNet synonyms, or
    meteor_nosyn  the same without synonym matching (exact and stem matches only) where no
                  WordNet database is found: reported under its own name, never as METEOR
    token_f1      SQuAD token F1 after normalisation (lowercase, no punctuation or articles)
    exact_match   1.0 when the normalised answer equals the normalised reference
With several references, BLEU counts n-gram matches against all of them and takes the closest
reference length (sacrebleu), GLEU pools them (nltk), chrF, METEOR, token F1 and exact match take
the best-matching reference. Degeneration, on the answer alone:
    loop          1.0 when some word 3-gram occurs 3 or more times ("a waste, a waste, a waste")
The paper reports BLEU / GLEU / METEOR in percent (e.g. 2.40 / 4.90 / 10.77): same scale here.
`answer_scores` computes all of them at once; `meteor_name(wordnet)` says which METEOR a caller gets.
Corpus level: `distinct_n` over a set of answers; `paired_bootstrap` compares two systems per prompt.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _words(text: str) -> list[str]:
    """Lowercased word and punctuation tokens: "It's Paris." -> [it, ', s, paris, .]."""
    return _WORD.findall(text.lower())


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def _as_list(references: str | list[str]) -> list[str]:
    references = [references] if isinstance(references, str) else list(references)
    if not references:
        raise ValueError("need at least one reference")
    return references


def bleu(hypothesis: str, reference: str | list[str]) -> float:
    """Sentence BLEU in [0, 100] (Papineni et al. 2002): brevity penalty x geometric mean of the
    clipped 1..4-gram precisions, via `sacrebleu.sentence_bleu` with its defaults: 13a
    tokenisation, case-sensitive, effective order (a 2-token answer uses 1- and 2-grams only) and
    "exp" smoothing (each n-gram order with no match counts as 1 / (2^k x its n-gram count)).
    Identical -> 100 (up to rounding), no shared unigram -> 0."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, _as_list(reference)).score)


def chrf(hypothesis: str, reference: str | list[str]) -> float:
    """Sentence chrF in [0, 100] (Popovic 2015) via `sacrebleu.sentence_chrf`: F-beta (beta 2,
    recall weighted) of character 1..6-gram precision and recall, whitespace removed; the best
    over several references."""
    import sacrebleu

    return max(float(sacrebleu.sentence_chrf(hypothesis, [r]).score) for r in _as_list(reference))


def gleu(hypothesis: str, reference: str | list[str]) -> float:
    """Sentence GLEU x 100, in [0, 100] (Wu et al. 2016, nltk `sentence_gleu`): over all 1..4-grams
    of the lowercased word tokens, min(matches / hypothesis n-grams, matches / reference n-grams).
    Scaled to percent like the paper's table."""
    from nltk.translate.gleu_score import sentence_gleu

    return 100.0 * float(sentence_gleu([_words(r) for r in _as_list(reference)], _words(hypothesis)))


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


def _write_atomically(target: Path, write) -> None:
    """write(tmp_path), then rename over target: a concurrent reader (another worker loading
    WordNet) never sees a half-written file, and an interrupted copy leaves no truncated one."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _complete_wordnet(root: Path) -> Path:
    """root itself when it has `lexnames`, else a cached copy of it plus lexnames (copies, not
    links: nltk refuses files that resolve outside the folder it reads)."""
    if (root / "lexnames").exists():
        return root
    cache = Path(os.environ.get("CROWDLESS_CACHE", Path.home() / ".cache" / "crowdless")) / "wordnet"
    cache.mkdir(parents=True, exist_ok=True)
    for file in root.iterdir():
        target = cache / file.name
        if file.is_file() and not (target.exists() and target.stat().st_size == file.stat().st_size):
            _write_atomically(target, lambda tmp, src=file: shutil.copyfile(src, tmp))
    lexnames = "".join(f"{i:02d}\t{name}\t{_LEX_POS[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))
    if not (cache / "lexnames").exists() or (cache / "lexnames").read_text() != lexnames:
        _write_atomically(cache / "lexnames", lambda tmp: tmp.write_text(lexnames))
    return cache


def load_wordnet():
    """An nltk WordNetCorpusReader over the first WordNet 3.0 database in `wordnet_roots()` (a
    folder holding data.noun), or None when there is none: then METEOR has no synonyms and is
    reported as meteor_nosyn. Two things nltk needs beyond `WordNetCorpusReader(root, None)`: the
    folder on `nltk.data.path` (nltk refuses other paths) and a `lexnames` file (Debian's
    wordnet-base has none; a copy with it is cached under $CROWDLESS_CACHE or ~/.cache/crowdless)."""
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
    """The name `meteor(..., wordnet)` must be reported under: "meteor" with a WordNet reader,
    "meteor_nosyn" with None (exact and stem matches only)."""
    return "meteor" if wordnet is not None else "meteor_nosyn"


def meteor(hypothesis: str, reference: str | list[str], wordnet) -> float:
    """METEOR x 100, in [0, 100) (Banerjee & Lavie 2005, nltk `meteor_score` on lowercased word
    tokens): unigram matches (exact, Porter stem, then WordNet synonym), harmonic mean
    F = 10PR / (R + 9P), times 1 - 0.5 (chunks / matches)^3. Even an identical answer loses to the
    fragmentation penalty (one word: 50, four words: 99.2). With wordnet None, synonym matching is
    off: report that score as meteor_nosyn (`meteor_name`). Several references: the best one."""
    from nltk.translate.meteor_score import meteor_score

    return 100.0 * float(meteor_score([_words(r) for r in _as_list(reference)], _words(hypothesis),
                                      wordnet=wordnet if wordnet is not None else _NoSynonyms()))


def token_f1(hypothesis: str, reference: str) -> float:
    """SQuAD token F1 in [0, 1]: harmonic mean of precision and recall of the shared normalised
    tokens (multiset overlap). Both empty after normalisation -> 1.0, one empty -> 0.0."""
    hyp, ref = normalize_answer(hypothesis).split(), normalize_answer(reference).split()
    if not hyp or not ref:
        return float(hyp == ref)
    common = sum((Counter(hyp) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(hypothesis: str, reference: str) -> float:
    """1.0 when the SQuAD-normalised answer equals the normalised reference, else 0.0."""
    return float(normalize_answer(hypothesis) == normalize_answer(reference))


def has_loop(text: str, n: int = 3, times: int = 3) -> bool:
    """True when some word n-gram occurs `times` or more times in the text (overlaps count): the
    mark of a greedy answer stuck in a loop. Punctuation is ignored, so "a waste, a waste, a waste, a waste"
    loops on (a, waste, a)."""
    words = re.findall(r"\w+", text.lower())
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(count >= times for count in grams.values())


def answer_scores(hypothesis: str, references: str | list[str], wordnet) -> dict[str, float]:
    """Every per-answer metric above, by name: bleu, chrf, gleu, meteor or meteor_nosyn (see
    `meteor_name`), token_f1, exact_match (the best over several references), loop. Embedding
    cosine is computed elsewhere."""
    references = _as_list(references)
    return {
        "bleu": bleu(hypothesis, references),
        "chrf": chrf(hypothesis, references),
        "gleu": gleu(hypothesis, references),
        meteor_name(wordnet): meteor(hypothesis, references, wordnet),
        "token_f1": max(token_f1(hypothesis, r) for r in references),
        "exact_match": max(exact_match(hypothesis, r) for r in references),
        "loop": float(has_loop(hypothesis)),
    }


def distinct_n(texts: list[str], n: int) -> float:
    """distinct-n in [0, 1] (Li et al. 2016): unique n-grams / all n-grams, pooled over all answers
    (a corpus-level figure; n-grams do not cross answers), on lowercased word and punctuation
    tokens. 0.0 when no answer has n tokens."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(words[i:i + n]) for words in map(_words, texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def paired_bootstrap(baseline: np.ndarray, system: np.ndarray, rng: np.random.Generator,
                     resamples: int = 1000, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of system - baseline over prompts, with a paired percentile bootstrap interval
    (Koehn 2004): baseline and system are per-prompt scores [N] on the same prompts; each of
    `resamples` resamples draws N prompt indices with replacement, the same for both systems (so
    it resamples the per-prompt differences), and the interval is the (1 - confidence) / 2 and
    (1 + confidence) / 2 percentiles of the resampled mean differences.
    Returns (mean_difference, low, high); all-equal scores give (0.0, 0.0, 0.0)."""
    baseline, system = np.asarray(baseline, dtype=float), np.asarray(system, dtype=float)
    if baseline.shape != system.shape or baseline.ndim != 1 or len(baseline) == 0:
        raise ValueError(f"baseline and system need the same non-empty [N] shape, got "
                         f"{baseline.shape} and {system.shape}")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples}, {confidence}")
    differences = system - baseline
    draws = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(differences.mean()), float(low), float(high)
