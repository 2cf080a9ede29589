"""Prompt datasets: the embedded chatterbot English corpus, local files, hub datasets.

Every source yields PromptExample records. A malformed row raises DataError
naming the file and line (or row); with on_bad_row="skip" it is counted in
LoadReport.skipped instead. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
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


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped rows, explained


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


def _to_example(row: Any, prompt_field: str, reference_field: str | None) -> PromptExample:
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
    return PromptExample(prompt=prompt.strip(), reference=reference.strip() if reference else None)


def _rows(source: str, split: str) -> Iterable[tuple[str, Any]]:
    if source == "embedded:chatterbot" or source.startswith("embedded:chatterbot/"):
        categories = source.partition("/")[2]
        return _chatterbot_rows([c for c in categories.split(",") if c])
    if source.startswith("embedded:"):
        raise DataError(f"unknown embedded dataset {source!r}; known: embedded:chatterbot")
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
    """All prompts of `source`, in file order. Raises DataError on the first bad row unless skipping."""
    examples: list[PromptExample] = []
    report = LoadReport(source=source)
    if source.startswith("embedded:chatterbot"):
        # The packaged corpus has a few malformed conversations that no user can fix: count, skip.
        prompt_field, reference_field, on_bad_row = "prompt", "reference", "skip"
    for where, row in _rows(source, split):
        try:
            examples.append(_to_example(row, prompt_field, reference_field))
        except DataError as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            if on_bad_row == "error":
                raise DataError(message) from None
            report.skipped += 1
            if len(report.problems) < 5:
                report.problems.append(message)
    report.loaded = len(examples)
    if not examples:
        raise DataError(f"no usable prompts in {source} ({report.skipped} rows skipped)")
    return examples, report


def split_prompts(
    examples: list[PromptExample], eval_fraction: float, seed: int
) -> tuple[list[PromptExample], list[PromptExample]]:
    """Deterministic (train, eval) split: a seeded permutation, the first eval_fraction held out."""
    order = np.random.default_rng(seed).permutation(len(examples))
    n_eval = int(round(eval_fraction * len(examples)))
    if eval_fraction > 0 and len(examples) > 1:
        n_eval = min(max(n_eval, 1), len(examples) - 1)
    held_out = [examples[i] for i in order[:n_eval]]
    train = [examples[i] for i in order[n_eval:]]
    return train, held_out


def load_prompt_split(data_config: Any, seed: int) -> tuple[list[PromptExample], list[PromptExample], LoadReport]:
    """Load and split prompts as a DataConfig says (max_prompts applies before the split)."""
    examples, report = load_prompts(
        data_config.source,
        prompt_field=data_config.prompt_field,
        reference_field=data_config.reference_field,
        split=data_config.split,
        on_bad_row=data_config.on_bad_row,
    )
    if data_config.max_prompts is not None:
        examples = examples[: data_config.max_prompts]
    train, held_out = split_prompts(examples, data_config.eval_fraction, seed)
    return train, held_out, report
