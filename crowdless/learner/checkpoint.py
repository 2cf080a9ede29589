"""A learner checkpoint: Hugging Face folders that transformers and vLLM load, the replay buffer,
and training_state/ (each engine's DeepSpeed checkpoint: optimizer moments and fp32 master
weights, and each rank's torch RNG), so that a resumed run continues the stopped one exactly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from crowdless.learner.engines import full_state_dict
from crowdless.learner.replay import save_replay

TRAINING_STATE = "training_state"  # checkpoint folder with optimizer and RNG states, for exact resume


def _rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def save_checkpoint(root: Path, engines: list[tuple[str, object, object]], learner, rank: int,
                    world_size: int, replay: list) -> None:
    """engines: (folder name, DeepSpeed engine, tokenizer) of every model the objective trains.
    Rank 0 writes the folders; every rank writes its own partition of the optimizer state."""
    for name, engine, tokenizer in engines:
        state = full_state_dict(engine, learner) if rank == 0 or learner.zero_stage == 3 else None
        if rank == 0:
            engine.module.save_pretrained(root / name, state_dict=state)
            tokenizer.save_pretrained(root / name)
        engine.save_checkpoint(str(root / TRAINING_STATE / name), tag=TRAINING_STATE, save_latest=False)
    torch.save({"torch_rng": torch.get_rng_state()}, root / TRAINING_STATE / _rng_file(rank))
    if rank == 0:
        (root / TRAINING_STATE / "group.json").write_text(
            json.dumps({"world_size": world_size, "zero_stage": learner.zero_stage}))
        save_replay(replay, root / "replay.jsonl")


def load_training_state(root: Path, engines: list[tuple[str, object, object]], learner, rank: int,
                        world_size: int) -> list[str]:
    """Optimizer states and RNG from a checkpoint's training_state/ (the models' weights came
    from its HF folders when they were built). Returns the engines restored; a checkpoint without
    training_state/ (written before it existed, or pruned), or written by a learner group of
    another size or ZeRO stage (each rank saved its own optimizer partition, in its stage's
    layout), restores none: moments restart."""
    state = root / TRAINING_STATE
    group = state / "group.json"
    # checkpoints from before the stage was recorded were written at the then default, ZeRO-2
    saved_by = {"world_size": 1, "zero_stage": 2, **(json.loads(group.read_text()) if group.exists() else {})}
    if (saved_by["world_size"], saved_by["zero_stage"]) != (world_size, learner.zero_stage):
        return []
    restored = []
    for name, engine, _ in engines:
        if (state / name / TRAINING_STATE).is_dir():
            engine.load_checkpoint(str(state / name), tag=TRAINING_STATE, load_module_strict=True,
                                   load_optimizer_states=True, load_lr_scheduler_states=True)
            restored.append(name)
    if (state / _rng_file(rank)).exists():
        torch.set_rng_state(torch.load(state / _rng_file(rank))["torch_rng"])
    return restored
