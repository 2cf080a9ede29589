"""The run directory: resolved config, metrics.jsonl, TensorBoard events, checkpoints.

    RUN_DIR/config.yaml
    RUN_DIR/metrics.jsonl               one JSON line per iteration
    RUN_DIR/tensorboard/
    RUN_DIR/checkpoints/iter-N/{policy,reward_model,value_model}/   HF folders
    RUN_DIR/checkpoints/iter-N/replay.jsonl, state.json
    RUN_DIR/checkpoints/latest -> iter-N   newest complete checkpoint
    RUN_DIR/control.yaml                optional, read each iteration: {rollout_workers: N}
    RUN_DIR/stopped.json                where run.stop_at_drift ended the run early
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path



class RunDirError(ValueError):
    """A run directory that must not be written to, or resumed as asked."""


def is_run_dir(run_dir: Path) -> bool:
    """A folder a crowdless job wrote: its config.yaml is a mapping with run and model sections."""
    import yaml

    try:
        recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(recorded, dict) and {"run", "model"} <= set(recorded)


def check_run_dir(run_dir: Path) -> None:
    """Refuse, before anything is written, a path that is a file or a non-empty folder that is not
    a crowdless run: a job writes config.yaml and metrics.jsonl and removes checkpoints/iter-*."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} is a file")
    if any(run_dir.iterdir()) and not is_run_dir(run_dir):
        raise RunDirError(f"run directory {run_dir} is not empty and holds no crowdless run (no config.yaml "
                          "of one): nothing was written; choose an empty or new --run-dir")


# Keys a resumed run may change: how long it goes on, and where the folder is spelled from.
RESUMABLE_KEYS = ("run.iterations", "run.stop_at_drift", "run.dir")


def config_changes(run_dir: Path, config_tree: dict) -> list[str]:
    """'key: recorded -> new' for every key whose value differs from RUN_DIR/config.yaml, beyond
    RESUMABLE_KEYS. A key an earlier version recorded under another name is compared under its
    name now (ppo.lr is policy.lr); keys only one side knows are skipped."""
    import yaml

    from configs.schema import MOVED_TO_POLICY, flat_keys

    recorded = flat_keys(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    for key in MOVED_TO_POLICY:
        if f"ppo.{key}" in recorded:
            recorded.setdefault(f"policy.{key}", recorded.pop(f"ppo.{key}"))
    new = flat_keys(config_tree)
    return [f"{key}: {recorded[key]!r} -> {new[key]!r}" for key in new
            if key in recorded and key not in RESUMABLE_KEYS and recorded[key] != new[key]]


def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"iter-{iteration}"


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(iteration, folder) of the newest complete checkpoint, or None."""
    latest = run_dir / "checkpoints" / "latest"
    state = latest / "state.json"
    if not state.exists():
        return None
    return json.loads(state.read_text())["iteration"], latest.resolve()


def mark_complete(run_dir: Path, iteration: int, state: dict) -> None:
    """Write state.json last, then swing `latest` atomically: a crash never leaves a half checkpoint as latest."""
    folder = checkpoint_dir(run_dir, iteration)
    (folder / "state.json").write_text(json.dumps({"iteration": iteration, **state}, indent=2))
    link = run_dir / "checkpoints" / "latest"
    staging = link.with_name("latest.tmp")
    if staging.is_symlink():
        staging.unlink()
    staging.symlink_to(folder.name)
    os.replace(staging, link)


def mark_stopped(run_dir: Path, iteration: int, policy_drift: float, stop_at_drift: float) -> dict:
    """RUN_DIR/stopped.json: the run ended at `iteration` before training it (run.stop_at_drift)."""
    stop = {"iteration": iteration, "policy_drift": policy_drift, "stop_at_drift": stop_at_drift}
    (run_dir / "stopped.json").write_text(json.dumps(stop, indent=2))
    return stop


def stopped_at(run_dir: Path, stop_at_drift: float | None) -> dict | None:
    """The run's stop (mark_stopped) where it still holds under this stop_at_drift: resumed with the
    same budget, the run would stop at the same place again. A stop a raised or lifted budget no
    longer holds is removed, and the run goes on."""
    stop = read_stop(run_dir)
    if stop is None or (stop_at_drift is not None and stop["policy_drift"] >= stop_at_drift):
        return stop
    (run_dir / "stopped.json").unlink()
    return None


def read_stop(run_dir: Path) -> dict | None:
    """RUN_DIR/stopped.json as mark_stopped wrote it, or None for a run that did not stop early."""
    path = run_dir / "stopped.json"
    return json.loads(path.read_text()) if path.exists() else None


def discard_incomplete_checkpoints(run_dir: Path, latest_iteration: int) -> list[str]:
    """Remove the folders of checkpoints after the latest complete one: what a stopped job left half
    written. The resumed run writes those iterations again into clean folders, so no file of the
    stopped attempt mixes with the new one. Returns the folders removed."""
    removed = []
    for folder in sorted((run_dir / "checkpoints").glob("iter-*")):
        if folder.name.removeprefix("iter-").isdigit() and int(folder.name.removeprefix("iter-")) > latest_iteration:
            shutil.rmtree(folder)
            removed.append(folder.name)
    return removed


def prune_training_state(run_dir: Path, keep_iteration: int, folder_name: str) -> None:
    """Optimizer states are several times the model's size and only resuming from the latest
    checkpoint needs them: drop folder_name from every other checkpoint (weights stay)."""
    for folder in (run_dir / "checkpoints").glob("iter-*"):
        if folder != checkpoint_dir(run_dir, keep_iteration) and (folder / folder_name).is_dir():
            shutil.rmtree(folder / folder_name)


def read_samples(run_dir: Path) -> dict[int, list[dict]]:
    """RUN/samples/iter-N.jsonl by iteration: each prompt's answers, scores, clusters and pairs."""
    files = sorted((run_dir / "samples").glob("iter-*.jsonl"), key=lambda f: int(f.stem[5:]))
    return {int(f.stem[5:]): [json.loads(line) for line in f.read_text().splitlines() if line] for f in files}


def write_eval_file(run_dir: Path, name: str, data) -> Path:
    """RUN/eval/NAME as indented JSON, for the diagnostic jobs; returns the path."""
    out = run_dir / "eval" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return out


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def check_room_for_checkpoint(run_dir: Path) -> None:
    """Refuse to start an iteration whose checkpoint would not fit on the disk: the newest
    complete checkpoint (weights and training state) is the measure of the next. A full disk
    otherwise fails mid-write with torch's "unexpected pos", after the iteration's work is done."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return
    needed, free = folder_bytes(latest[1]), shutil.disk_usage(run_dir).free
    if free < needed:
        gib = 1024 ** 3
        raise RunDirError(
            f"disk nearly full: {free / gib:.1f} GiB free under {run_dir}, but the last checkpoint "
            f"({latest[1].name}) took {needed / gib:.1f} GiB; free space (older runs, or the policy "
            f"folders of earlier checkpoints/iter-*) and rerun with --resume: the run stopped after "
            f"iteration {latest[0]}, nothing is lost")


def read_control(run_dir: Path):
    """(ControlConfig, None) from RUN_DIR/control.yaml, the run-time controls a user can edit while
    the job runs (jobs/scale.py); (empty ControlConfig, the error) where the file is invalid: a
    bad value must never stop a running job."""
    from configs.schema import ConfigError, ControlConfig, load_control

    path = run_dir / "control.yaml"
    if not path.exists():
        return ControlConfig(), None
    try:
        return load_control(path), None
    except ConfigError as exc:
        return ControlConfig(), " ".join(str(exc).split())


class MetricsLog:
    """metrics.jsonl (one line per iteration) plus TensorBoard scalars."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_after: int = 0):
        """resume_after: the last complete iteration; lines of later iterations are dropped, as the
        resumed run redoes them. Without a complete iteration the run redoes its baseline evaluation
        (iteration 0) as well, so that line goes too: no iteration is ever logged twice."""
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():
            iterations = [(line, json.loads(line)["iteration"]) for line in self.path.read_text().splitlines() if line]
            kept = [line for line, iteration in iterations if iteration <= resume_after and resume_after >= 1]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, iteration: int, metrics: dict) -> None:
        record = {"iteration": iteration, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")
        if self.writer:
            for key, value in record.items():
                if isinstance(value, (int, float)) and value is not None and key not in ("iteration", "time"):
                    self.writer.add_scalar(key, value, iteration)
            self.writer.flush()

    def amend_last(self, metrics: dict) -> None:
        """Add metrics to the last iteration's line: the held-out evaluation of a run's last policy
        when the run stopped early (run.stop_at_drift), after that line was written."""
        lines = self.path.read_text().splitlines()
        record = {**json.loads(lines[-1]), **{k: _plain(v) for k, v in metrics.items()}}
        self.path.write_text("".join(line + "\n" for line in [*lines[:-1], json.dumps(record)]))
        if self.writer:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["iteration"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def _plain(value):
    """JSON has no NaN: undefined figures (e.g. accuracy with no held-out pairs) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
