"""Prompt datasets: embedded corpora, dialogue and QA corpora on disk, local files, hub datasets.

`data.source` spellings:
  embedded:chatterbot[/category,...]  chatterbot-corpus (PyPI): the first two turns of conversations
  embedded:chitchat                   chitchat-dataset (PyPI): 7,168 human-human conversations
  dailydialog:PATH                    DailyDialog's dialogues_text.txt, or the folder holding it
  cornell:PATH                        the Cornell Movie-Dialogs folder (movie_lines.txt and
                                      movie_conversations.txt)
  squad:PATH                          a SQuAD v1.1 or v2.0 JSON file
  PATH.jsonl / .json / .csv / .parquet  rows with prompt_field (and reference_field)
  anything else                       a hub dataset name; squad and squad_v2 (also rajpurkar/...)
                                      are read like squad:PATH

Every source yields PromptExample records. Dialogue sources give one example per reply:
the prompt is the turn(s) before it, the reference is the human reply, the group is the
conversation, and split_prompts holds out whole groups. A malformed row raises DataError
naming the file and line (or row); with on_bad_row="skip" it is counted in
LoadReport.skipped instead. Well-formed rows that give no example (a SQuAD v2 question
without an answer, an empty turn) are counted in LoadReport.excluded. Nothing is dropped silently.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml


class DataError(ValueError):
    """Bad prompt data; the message names the file and the line or row."""


@dataclass(frozen=True)
class PromptExample:
    prompt: str
    reference: str | None = None
    group: str | None = None  # conversation or SQuAD article: split_prompts keeps it on one side


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    distinct_prompts: int = 0  # after normalize_prompt: a corpus may repeat a prompt many times
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped rows, explained
    excluded: dict[str, int] = field(default_factory=dict)  # rows that give no example, by reason


@dataclass(frozen=True)
class _Excluded:
    """A well-formed row that gives no example, e.g. a SQuAD v2 question without an answer."""

    reason: str


# A dialogue prompt is the turns before the reply, one a line: at most CONTEXT_TURNS of them and,
# beyond the last one, only as many as fit in CONTEXT_CHARS (prompts are capped near 256 tokens).
CONTEXT_TURNS = 2
CONTEXT_CHARS = 1000

SQUAD_PROMPT = "{context}\n\nQuestion: {question}\nAnswer in a few words."
SQUAD_HUB_NAMES = {"squad", "squad_v2", "rajpurkar/squad", "rajpurkar/squad_v2"}


def chatterbot_dir() -> Path:
    import chatterbot_corpus

    return Path(chatterbot_corpus.__file__).parent / "data" / "english"


def _chatterbot_rows(categories: list[str]) -> Iterable[tuple[str, Any]]:
    """Yields (where, {"prompt", "reference"}) for the first two turns of each conversation."""
    files = sorted(chatterbot_dir().glob("*.yml"))
    if categories:
        known = {f.stem for f in files}
        unknown = sorted(set(categories) - known)
        if unknown:
            raise DataError(f"unknown chatterbot categories {unknown}; known: {sorted(known)}")
        files = [f for f in files if f.stem in categories]
    for file in files:
        conversations = (yaml.safe_load(file.read_text()) or {}).get("conversations", [])
        for index, turns in enumerate(conversations):
            where = f"{file}: conversation {index + 1}"
            if not isinstance(turns, list) or not turns:
                yield where, turns
                continue
            # YAML reads some turns as numbers or booleans: the corpus means them as text.
            reference = str(turns[1]) if len(turns) > 1 else None
            yield where, {"prompt": str(turns[0]), "reference": reference}


def _package_dir(package: str, pip_name: str) -> Path:
    """Where a data-only package lies, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DataError(f"this dataset needs the {pip_name} package (pip install {pip_name})")
    return Path(spec.origin).parent


def _conversation_rows(where: str, group: str, turns: list[str]) -> Iterable[tuple[str, Any]]:
    """(where, row) for each reply of one conversation, turns in order, speakers alternating:
    row = {"prompt": the turns before the reply (see CONTEXT_TURNS), "reference": the reply,
    "group": group}. Whitespace inside a turn is collapsed, so a newline in a prompt always
    separates two turns. Empty turns are dropped and a conversation without a reply gives
    nothing; both are counted as excluded."""
    kept = []
    for turn in turns:
        text = " ".join(turn.split())
        if text:
            kept.append(text)
        else:
            yield where, _Excluded("empty dialogue turn")
    if len(kept) < 2:
        yield where, _Excluded("conversation without a reply")
    for index in range(1, len(kept)):
        context = kept[index - 1]  # the turn replied to, whatever its length
        for turn in reversed(kept[max(0, index - CONTEXT_TURNS) : index - 1]):
            if len(turn) + 1 + len(context) > CONTEXT_CHARS:
                break
            context = f"{turn}\n{context}"
        yield where, {"prompt": context, "reference": kept[index], "group": group}


def _chitchat_rows() -> Iterable[tuple[str, Any]]:
    """chitchat-dataset's dataset.json: {conversation id: {"messages": [[{"text", "sender",
    "timestamp"}, ...], ...], ...}}. A message is one speaker's turn, a list of utterances
    (joined with spaces here); speakers alternate message by message."""
    path = _package_dir("chitchat_dataset", "chitchat-dataset") / "dataset.json"
    for conversation_id, conversation in json.loads(path.read_bytes()).items():
        where = f"{path}: conversation {conversation_id}"
        try:
            turns = [" ".join([u["text"] for u in message]) for message in conversation["messages"]]
        except (TypeError, KeyError):  # not the nesting above, or a text that is not a string
            yield where, DataError("expected {'messages': [[{'text': ...}, ...], ...]}")
            continue
        yield from _conversation_rows(where, conversation_id, turns)


def _dailydialog_rows(path: Path) -> Iterable[tuple[str, Any]]:
    """DailyDialog's dialogues_text.txt (UTF-8): one dialogue a line, every turn ending with
    `__eou__`, e.g. `The kitchen stinks . __eou__ I'll throw out the garbage . __eou__`.
    The corpus repeats some dialogues: identical lines share a group (the first one's line)."""
    if path.is_dir():
        path = path / "dialogues_text.txt"
        if not path.exists():
            raise DataError(f"data file not found: {path}")
    first_line: dict[str, str] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            *turns, rest = line.split("__eou__")
            if rest.strip():
                yield where, DataError(
                    f"text after the last __eou__ (each turn ends with it): {rest.strip()[:40]!r}"
                )
                continue
            group = first_line.setdefault(" ".join(line.split()), str(number))
            yield from _conversation_rows(where, group, turns)


def _cornell_records(path: Path, n_fields: int) -> Iterable[tuple[str, list[str] | DataError]]:
    """(where, fields) per non-blank line of a Cornell Movie-Dialogs file (ISO-8859-1, fields
    separated by ` +++$+++ `); a line with too few fields gives a DataError instead."""
    with path.open(encoding="iso-8859-1") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split("+++$+++", n_fields - 1)]
            if len(fields) != n_fields:
                message = f"expected {n_fields} fields separated by ' +++$+++ ', got {len(fields)}"
                yield f"{path}:{number}", DataError(message)
            else:
                yield f"{path}:{number}", fields


def _cornell_rows(folder: Path) -> Iterable[tuple[str, Any]]:
    """Cornell Movie-Dialogs: movie_lines.txt has `L1045 +++$+++ u0 +++$+++ m0 +++$+++ BIANCA
    +++$+++ They do not!` (line id, character id, movie id, character name, text) and
    movie_conversations.txt has `u0 +++$+++ u2 +++$+++ m0 +++$+++ ['L194', 'L195', 'L196']`
    (the two characters, the movie, the line ids in order). The group is movie/first line id."""
    if folder.is_file():
        folder = folder.parent
    lines_file, conversations_file = folder / "movie_lines.txt", folder / "movie_conversations.txt"
    for file in (lines_file, conversations_file):
        if not file.exists():
            raise DataError(f"data file not found: {file}")
    text: dict[str, str] = {}
    for where, fields in _cornell_records(lines_file, 5):
        if isinstance(fields, DataError):
            yield where, fields
        else:
            text[fields[0]] = fields[4]
    for where, fields in _cornell_records(conversations_file, 4):
        if isinstance(fields, DataError):
            yield where, fields
            continue
        try:
            line_ids = ast.literal_eval(fields[3])
        except (ValueError, TypeError, SyntaxError):
            line_ids = None
        is_list = isinstance(line_ids, list) and all(isinstance(i, str) for i in line_ids)
        if not is_list or not line_ids:
            message = f"expected a list of line ids like ['L194', 'L195'], got {fields[3][:40]!r}"
            yield where, DataError(message)
            continue
        unknown = [i for i in line_ids if i not in text]
        if unknown:
            yield where, DataError(f"line ids not in {lines_file.name}: {unknown[:3]}")
            continue
        turns = [text[i] for i in line_ids]
        yield from _conversation_rows(where, f"{fields[2]}/{line_ids[0]}", turns)


def _squad_row(context: Any, question: Any, answers: list[str], group: str | None) -> Any:
    """One SQuAD question as a row: prompt = SQUAD_PROMPT (context, then the question, so that
    left truncation keeps the question), reference = the first answer. No answer: excluded."""
    if not isinstance(context, str) or not context.strip():
        return DataError("context must be a non-empty string")
    if not isinstance(question, str) or not question.strip():
        return DataError("question must be a non-empty string")
    if not answers:
        return _Excluded("unanswerable question")
    prompt = SQUAD_PROMPT.format(context=context.strip(), question=question.strip())
    return {"prompt": prompt, "reference": answers[0], "group": group}


def _squad_file_rows(path: Path) -> Iterable[tuple[str, Any]]:
    """SQuAD v1.1 / v2.0 JSON: {"data": [{"title", "paragraphs": [{"context", "qas": [{"question",
    "answers": [{"text", "answer_start"}], "is_impossible" (v2)}]}]}]}. The group is the article
    title, so all questions on one article's paragraphs stay on one side of the split."""
    if path.is_dir():
        raise DataError(f"{path}: squad:PATH names the JSON file (train-v2.0.json), not a folder")
    try:
        document = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        message = f"invalid JSON ({exc.msg} at column {exc.colno})"
        raise DataError(f"{path}:{exc.lineno}: {message}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise DataError(f"{path}: expected a SQuAD object {{'data': [articles]}}")
    for a, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield f"{path}: data[{a}]", DataError("expected {'title': ..., 'paragraphs': [...]}")
            continue
        title = article.get("title")
        group = title if isinstance(title, str) and title else f"data[{a}]"
        for p, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                message = "expected {'context': ..., 'qas': [...]}"
                yield f"{path}: data[{a}].paragraphs[{p}]", DataError(message)
                continue
            for q, qa in enumerate(qas):
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                answers = qa.get("answers", []) if isinstance(qa, dict) else None
                if not isinstance(answers, list) or not all(
                    isinstance(x, dict) and isinstance(x.get("text"), str) for x in answers
                ):
                    yield where, DataError("expected {'question': ..., 'answers': [{'text': ...}]}")
                    continue
                # A v2 question marked is_impossible has no answer (its answers list is empty).
                texts = [x["text"] for x in answers if x["text"].strip()]
                if qa.get("is_impossible"):
                    texts = []
                yield where, _squad_row(paragraph.get("context"), qa.get("question"), texts, group)


def read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    """(line number, parsed value) per non-blank line; a line that is not JSON yields a DataError
    in place of the value, so the caller decides whether to stop or to skip and count it."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, DataError(f"invalid JSON ({exc.msg} at column {exc.colno})")


def _table_rows(path: Path) -> Iterable[tuple[str, Any]]:
    import datasets

    kind = {".csv": "csv", ".parquet": "parquet", ".json": "json"}[path.suffix]
    options = {}
    if kind == "csv":  # cells are text: otherwise an answer "22" would be read as a number
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
        options["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    try:
        table = datasets.load_dataset(kind, data_files=str(path), split="train", **options)
    except Exception as exc:  # datasets wraps parser errors in many types
        raise DataError(f"{path}: cannot be read as {kind}: {exc}") from exc
    # CSV line numbers count the header; other formats report the row index.
    for index, row in enumerate(table):
        yield (f"{path}:{index + 2}" if kind == "csv" else f"{path}: row {index}"), row


def _hub_rows(name: str, split: str) -> Iterable[tuple[str, Any]]:
    import datasets

    try:
        table = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(
            f"data.source {name!r} is neither a local file nor a loadable hub dataset: {exc}"
        ) from exc
    for index, row in enumerate(table):
        yield f"{name}[{split}] row {index}", row


def _squad_hub_rows(name: str, split: str) -> Iterable[tuple[str, Any]]:
    """The hub's SQuAD rows {"title", "context", "question", "answers": {"text": [...]}}, read as
    squad:PATH reads the JSON (squad_v2 marks an unanswerable question by an empty answer list)."""
    for where, row in _hub_rows(name, split):
        answers = row.get("answers") or {}
        texts = [t for t in answers.get("text", []) if isinstance(t, str) and t.strip()]
        title = row.get("title") or None
        yield where, _squad_row(row.get("context"), row.get("question"), texts, title)


def prompt_example(
    row: Any, prompt_field: str, reference_field: str | None, group_field: str | None = None
) -> PromptExample:
    """One data row as a PromptExample: a non-empty string prompt, an optional string reference
    (the training loaders and the tuning service's file upload check rows alike)."""
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(f"expected an object with a {prompt_field!r} field, got {type(row).__name__}")
    if prompt_field not in row:
        raise DataError(f"missing field {prompt_field!r} (fields: {sorted(row)})")
    prompt = row[prompt_field]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"field {prompt_field!r} must be a non-empty string, got {prompt!r}")
    reference = row.get(reference_field) if reference_field else None
    if reference is not None and not isinstance(reference, str):
        raise DataError(f"field {reference_field!r} must be a string, got {type(reference).__name__}")
    group = row.get(group_field) if group_field else None
    reference = reference.strip() if reference else None
    return PromptExample(prompt=prompt.strip(), reference=reference, group=group)


# data.source prefixes of corpora read from disk: "cornell:PATH" and so on.
_CORPUS_READERS = {
    "dailydialog": _dailydialog_rows,
    "cornell": _cornell_rows,
    "squad": _squad_file_rows,
}


def _has_fixed_fields(source: str) -> bool:
    """Sources whose rows are {"prompt", "reference", "group"} whatever prompt_field says."""
    prefix = source.partition(":")[0]
    return source.startswith("embedded:") or prefix in _CORPUS_READERS or source in SQUAD_HUB_NAMES


def _rows(source: str, split: str) -> Iterable[tuple[str, Any]]:
    if source == "embedded:chatterbot" or source.startswith("embedded:chatterbot/"):
        categories = source.partition("/")[2]
        return _chatterbot_rows([c for c in categories.split(",") if c])
    if source == "embedded:chitchat":
        return _chitchat_rows()
    if source.startswith("embedded:"):
        known = "embedded:chatterbot[/category,...], embedded:chitchat"
        raise DataError(f"unknown embedded dataset {source!r}; known: {known}")
    prefix, _, rest = source.partition(":")
    if prefix in _CORPUS_READERS:
        if not rest or not Path(rest).exists():
            raise DataError(f"data file not found: {rest!r} (spelled {prefix}:PATH)")
        return _CORPUS_READERS[prefix](Path(rest))
    if source in SQUAD_HUB_NAMES:
        return _squad_hub_rows(source, split)
    path = Path(source)
    if path.suffix in {".jsonl", ".json", ".csv", ".parquet"}:
        if not path.exists():
            raise DataError(f"data file not found: {path}")
        if path.suffix == ".jsonl":
            return ((f"{path}:{number}", row) for number, row in read_jsonl(path))
        return _table_rows(path)
    return _hub_rows(source, split)


def load_prompts(
    source: str,
    *,
    prompt_field: str = "prompt",
    reference_field: str | None = "reference",
    split: str = "train",
    on_bad_row: str = "error",
) -> tuple[list[PromptExample], LoadReport]:
    """All prompts of `source` (spellings in the module docstring), in file order. Raises DataError
    on the first bad row unless skipping. prompt_field and reference_field apply to plain files
    and hub datasets only: the embedded and corpus sources know their own fields."""
    examples: list[PromptExample] = []
    report = LoadReport(source=source)
    group_field = None
    if _has_fixed_fields(source):
        prompt_field, reference_field, group_field = "prompt", "reference", "group"
    if source.startswith("embedded:"):
        # The packaged corpora have a few malformed conversations that no user can fix: count, skip.
        on_bad_row = "skip"
    for where, row in _rows(source, split):
        if isinstance(row, _Excluded):
            report.excluded[row.reason] = report.excluded.get(row.reason, 0) + 1
            continue
        try:
            examples.append(prompt_example(row, prompt_field, reference_field, group_field))
        except DataError as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            if on_bad_row == "error":
                raise DataError(message) from None
            report.skipped += 1
            if len(report.problems) < 5:
                report.problems.append(message)
    report.loaded = len(examples)
    report.distinct_prompts = len({normalize_prompt(e.prompt) for e in examples})
    if not examples:
        excluded = "".join(f", {n} {reason}" for reason, n in report.excluded.items())
        raise DataError(f"no usable prompts in {source} ({report.skipped} rows skipped{excluded})")
    return examples, report


def normalize_prompt(text: str) -> str:
    """The key under which two prompts count as the same one: lowercased, whitespace collapsed
    (a dialogue prompt's context turns are part of its text)."""
    return " ".join(text.lower().split())


def _components(examples: list[PromptExample]) -> list[int]:
    """Per example, the id of its split unit: examples sharing a group (conversation, article) or
    a normalised prompt are one unit, transitively (union-find), so neither is ever on both sides."""
    parent = list(range(len(examples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple[str, str], int] = {}
    for i, example in enumerate(examples):
        keys = [("prompt", normalize_prompt(example.prompt))]
        if example.group is not None:
            keys.append(("group", str(example.group)))
        for key in keys:
            j = first_of.setdefault(key, i)
            parent[root(i)] = root(j)
    return [root(i) for i in range(len(examples))]


def split_prompts(
    examples: list[PromptExample], eval_fraction: float, seed: int
) -> tuple[list[PromptExample], list[PromptExample]]:
    """Deterministic (train, eval) split by prompt. Examples that share a normalised prompt
    (`normalize_prompt`) or a group (a conversation, an article) form one unit, and a unit is
    on one side only: a corpus that repeats a prompt with several references never has that
    prompt on both sides. eval_fraction is a share of units (distinct prompts where there are no
    groups), held out in a seeded order: at least one, never all. A unit holding more than
    eval_fraction of all examples stays in training, so one very common prompt (or a chain of
    conversations joined by one) cannot swallow the held-out side. Both sides come in a seeded
    permutation order of the examples."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    units = _components(examples)
    sizes: dict[int, int] = {}
    for unit in units:
        sizes[unit] = sizes.get(unit, 0) + 1
    unit_ids = list(sizes)
    n_eval = int(round(eval_fraction * len(unit_ids)))
    if eval_fraction > 0 and len(unit_ids) > 1:
        n_eval = min(max(n_eval, 1), len(unit_ids) - 1)
    largest = max(1.0, eval_fraction * len(examples))
    held_units: set[int] = set()
    for u in rng.permutation(len(unit_ids)):
        if len(held_units) >= n_eval:
            break
        if sizes[unit_ids[u]] <= largest:
            held_units.add(unit_ids[u])
    held_out = [examples[i] for i in order if units[i] in held_units]
    train = [examples[i] for i in order if units[i] not in held_units]
    return train, held_out


@dataclass(frozen=True)
class DistinctPrompt:
    """One distinct prompt (the first spelling met) with every reference the data gives it."""

    prompt: str
    references: list[str]

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "references": self.references}


def distinct_prompts(examples: Iterable[PromptExample]) -> list[DistinctPrompt]:
    """Examples grouped by normalised prompt, in order of first appearance; references in order,
    without repeats. Prompts without any reference are left out (nothing to judge against)."""
    references: dict[str, tuple[str, list[str]]] = {}
    for example in examples:
        prompt, refs = references.setdefault(normalize_prompt(example.prompt), (example.prompt, []))
        if example.reference and example.reference not in refs:
            refs.append(example.reference)
    return [DistinctPrompt(prompt, refs) for prompt, refs in references.values() if refs]


def first_turns(examples: list[PromptExample]) -> list[PromptExample]:
    """The first example of each group (a conversation's opening turn and its reply; the loaders
    yield a conversation's rows in order) and every example without a group."""
    seen: set[str] = set()
    kept = []
    for example in examples:
        if example.group is None or example.group not in seen:
            kept.append(example)
        if example.group is not None:
            seen.add(example.group)
    return kept


def load_prompt_split(data_config: Any, seed: int) -> tuple[list[PromptExample], list[PromptExample], LoadReport]:
    """Load and split prompts as a DataConfig says. max_prompts keeps the first prompts in file
    order, before the split: a conversation cut there keeps its first turns, and the split still
    keeps each conversation on one side."""
    examples, report = load_prompts(
        data_config.source,
        prompt_field=data_config.prompt_field,
        reference_field=data_config.reference_field,
        split=data_config.split,
        on_bad_row=data_config.on_bad_row,
    )
    if data_config.max_prompts is not None:
        examples = examples[: data_config.max_prompts]
    if data_config.eval_source is None:
        train, held_out = split_prompts(examples, data_config.eval_fraction, seed)
        return train, held_out, report
    held_out, _ = load_prompts(data_config.eval_source, prompt_field=data_config.prompt_field,
                               reference_field=data_config.reference_field, split=data_config.split,
                               on_bad_row=data_config.on_bad_row)
    judged = {normalize_prompt(e.prompt) for e in held_out}
    train = [e for e in examples if normalize_prompt(e.prompt) not in judged]
    if not train:
        raise DataError(f"every prompt of {data_config.source} is in data.eval_source: none left to train on")
    return train, held_out, report
