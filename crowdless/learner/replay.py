"""The reward model's replay buffer: the most recent training pairs, kept across iterations and in
each checkpoint (replay.jsonl), so that a resumed run replays what the stopped one would have."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from algos.pairs import PreferencePair

REPLAY_KEEP = 2048  # most recent training pairs remembered for replay


def remember(replay: list[PreferencePair], fresh: list[PreferencePair]) -> list[PreferencePair]:
    return (replay + fresh)[-REPLAY_KEEP:]


def save_replay(replay: list[PreferencePair], path: Path) -> None:
    with path.open("w") as out:
        for pair in replay:
            out.write(json.dumps(asdict(pair)) + "\n")


def load_replay(path: Path) -> list[PreferencePair]:
    if not path.exists():
        return []
    return [PreferencePair(**json.loads(line)) for line in path.read_text().splitlines() if line]
