"""crowdless-rank: label-free preference data from sampled answers, for anyone's trainer.

    crowdless-rank INPUT.jsonl OUTPUT.jsonl [--pairs PAIRS.jsonl] [--config FILE] [key.sub=value ...]

INPUT lines: {"prompt": "...", "answers": ["...", "..."]}
OUTPUT lines: the prompt, every answer's TextRank score and ISODATA cluster, the
ranked distinct answers and the preference pairs. PAIRS (optional) holds one
{"prompt", "chosen", "rejected", "noised"} line per pair: the format TRL's
RewardTrainer and DPOTrainer read.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np

from configs.schema import ConfigError, load_config
from crowdless.data.prompt_sets import DataError, read_jsonl
from crowdless.ranking import embed, load_embedder, rank_group

CHUNK_GROUPS = 256  # groups embedded together: one batch call, bounded memory


def read_answer_groups(path: Path, skip_bad: bool) -> Iterator[tuple[int, str, list[str]]]:
    """Yields (line number, prompt, answers); bad lines raise DataError (or are skipped, counted)."""
    skipped = 0
    for number, row in read_jsonl(path):
        try:
            yield (number, *_parse_group(row))
        except DataError as exc:
            if not skip_bad:
                raise DataError(f"{path}:{number}: {exc}") from None
            skipped += 1
            print(f"skipping {path}:{number}: {exc}", file=sys.stderr)
    if skipped:
        print(f"skipped {skipped} bad lines of {path}", file=sys.stderr)


def _parse_group(row) -> tuple[str, list[str]]:
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(f"expected an object, got {type(row).__name__}")
    for key in ("prompt", "answers"):
        if key not in row:
            raise DataError(f"missing field {key!r}")
    prompt, answers = row["prompt"], row["answers"]
    if not isinstance(prompt, str):
        raise DataError(f"field 'prompt' must be a string, got {type(prompt).__name__}")
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DataError("field 'answers' must be a list of strings")
    if not answers:
        raise DataError("field 'answers' is empty")
    return prompt, answers


def _chunks(groups: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for group in groups:
        chunk.append(group)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowdless-rank", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="JSONL of {prompt, answers}")
    parser.add_argument("output", type=Path, help="JSONL of ranked groups")
    parser.add_argument("--pairs", type=Path, help="also write flat preference pairs here")
    parser.add_argument("--config", help="crowdless config whose ranking/model sections apply")
    parser.add_argument("--skip-bad-lines", action="store_true", help="skip and count bad lines")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. ranking.noise_prob=0")
    args = parser.parse_intermixed_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if not args.input.exists():
            raise DataError(f"input file not found: {args.input}")
        chunks = _chunks(read_answer_groups(args.input, args.skip_bad_lines), CHUNK_GROUPS)
        # Read the first chunk before loading the embedding model, so bad input fails fast.
        first_chunk = next(chunks, [])
        embedder = load_embedder(config.model.embedding)
        written = pairs_written = 0
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as files:
            out = files.enter_context(args.output.open("w"))
            pairs_file = files.enter_context(args.pairs.open("w")) if args.pairs else None
            for chunk in _prepend(first_chunk, chunks):
                vectors = embed(embedder, [a for _, _, answers in chunk for a in answers])
                offset = 0
                for number, prompt, answers in chunk:
                    rng = np.random.default_rng([config.run.seed, number])
                    group_vectors = vectors[offset : offset + len(answers)]
                    offset += len(answers)
                    group = rank_group(prompt, answers, group_vectors, config.ranking, rng)
                    out.write(json.dumps(group.to_json()) + "\n")
                    written += 1
                    pairs_written += len(group.pairs)
                    for pair in group.pairs if pairs_file else ():
                        pairs_file.write(json.dumps(asdict(pair)) + "\n")
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ranked {written} prompts, {pairs_written} preference pairs -> {args.output}")
    return 0


def _prepend(first: list, rest: Iterator[list]) -> Iterator[list]:
    if first:
        yield first
    yield from rest


if __name__ == "__main__":
    sys.exit(main())
