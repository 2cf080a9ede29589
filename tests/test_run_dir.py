"""The run directory: never written where it is not a crowdless run, resumed only with the config it
started with, metrics never logged twice, and the run-time control file read by the typed schema."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
import scale  # noqa: E402
import train  # noqa: E402

from cluster.run_dir import MetricsLog, checkpoint_dir, mark_complete, mark_stopped, read_control, stopped_at  # noqa: E402
from configs.schema import dump_config, load_config  # noqa: E402

pytestmark = pytest.mark.unit


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def test_a_foreign_folder_is_left_byte_for_byte_unchanged(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "checkpoints" / "iter-1").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "metrics.jsonl").write_text('{"loss": 1}\n')
    (folder / "checkpoints" / "iter-1" / "weights.bin").write_bytes(b"\x00\x01")
    before = _snapshot(folder)
    for extra in ([], ["--resume"]):
        assert train.main(["--config", "tiny", "--run-dir", str(folder), *extra]) == 2
        assert "is not empty and holds no crowdless run" in capsys.readouterr().err
        assert _snapshot(folder) == before
    file = tmp_path / "a-file"
    file.write_text("x")
    assert train.main(["--config", "tiny", "--run-dir", str(file)]) == 2
    assert "is a file" in capsys.readouterr().err and file.read_text() == "x"


def test_resume_refuses_a_changed_config_and_names_the_keys(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recorded = dump_config(load_config("tiny", [f"run.dir={run_dir}"]))
    (run_dir / "config.yaml").write_text(recorded)
    code = train.main(["--config", "tiny", "--run-dir", str(run_dir), "--resume", "policy.lr=0.5",
                       "rollout.samples_per_prompt=6"])
    err = capsys.readouterr().err
    assert code == 2 and "policy.lr: 0.001 -> 0.5" in err and "rollout.samples_per_prompt: 4 -> 6" in err
    assert "--force-config" in err and (run_dir / "config.yaml").read_text() == recorded


def test_a_resume_before_the_first_checkpoint_logs_no_row_twice(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.log(0, {"eval_unseen_chrf": 14.0})  # the baseline, then the job stopped
    resumed = MetricsLog(tmp_path, tensorboard=False, resume_after=0)  # no complete iteration
    resumed.log(0, {"eval_unseen_chrf": 14.0})
    resumed.log(1, {"pairs": 3})
    again = MetricsLog(tmp_path, tensorboard=False, resume_after=1)  # stopped in iteration 2
    again.log(2, {"pairs": 4})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [0, 1, 2]


def test_the_last_policy_of_a_stopped_run_gets_its_evaluation_on_its_own_line(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.log(1, {"pairs": 3})
    log.amend_last({"eval_unseen_chrf": 15.0, "eval_unseen_bleu": float("nan")})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{**rows[0], "iteration": 1, "pairs": 3, "eval_unseen_chrf": 15.0, "eval_unseen_bleu": None}]


def test_a_stop_holds_while_the_budget_does(tmp_path):
    assert stopped_at(tmp_path, 4.0) is None  # never stopped
    stop = mark_stopped(tmp_path, 3, 6.1, 4.0)
    assert stopped_at(tmp_path, 4.0) == stop == {"iteration": 3, "policy_drift": 6.1, "stop_at_drift": 4.0}
    assert stopped_at(tmp_path, 5.0) == stop  # a lower or slightly raised budget stops at the same policy
    assert stopped_at(tmp_path, 8.0) is None and not (tmp_path / "stopped.json").exists()  # raised past it: go on
    mark_stopped(tmp_path, 3, 6.1, 4.0)
    assert stopped_at(tmp_path, None) is None and not (tmp_path / "stopped.json").exists()  # budget lifted


def test_a_run_stopped_by_its_drift_budget_is_not_trained_again_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = [f"run.dir={run_dir}", "run.stop_at_drift=4"]
    checkpoint_dir(run_dir, 2).mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(load_config("tiny", overrides)))
    mark_complete(run_dir, 2, {})
    mark_stopped(run_dir, 3, 6.1, 4.0)
    code = train.main(["--config", "tiny", "--run-dir", str(run_dir), "--resume", "run.iterations=6",
                       "run.stop_at_drift=4"])
    out = capsys.readouterr().out
    assert code == 0 and "stopped at iteration 3 (policy_drift 6.10 nats per answer reached run.stop_at_drift 4)" in out
    assert "its last policy is iteration 2's" in out and not (run_dir / "metrics.jsonl").exists()  # nothing ran


@pytest.mark.parametrize("text, problem", [
    ("rollout_workers: 0", "rollout_workers: Input should be greater than or equal to 1"),
    ("rollout_workers: two", "rollout_workers: Input should be a valid integer"),
    ("rollout_workers: [1", "not valid YAML"),
    ("- 3", "expected a mapping"),
    ("rolout_workers: 2", "rolout_workers: unknown key"),
])
def test_a_bad_control_file_is_reported_not_raised(tmp_path, text, problem):
    (tmp_path / "control.yaml").write_text(text)
    control, error = read_control(tmp_path)
    assert control.rollout_workers is None and problem in error and "control.yaml" in error


def test_scale_writes_what_the_driver_reads(tmp_path, capsys):
    assert scale.main([str(tmp_path), "--rollout-workers", "2"]) == 2  # not a run directory
    (tmp_path / "config.yaml").write_text(dump_config(load_config("tiny")))
    assert scale.main([str(tmp_path), "--rollout-workers", "3"]) == 0
    assert read_control(tmp_path)[0].rollout_workers == 3
    (tmp_path / "control.yaml").write_text("rollout_workers: null\n")
    assert read_control(tmp_path)[0].rollout_workers is None
    assert scale.main([str(tmp_path), "--rollout-workers", "0"]) == 2
    (tmp_path / "control.yaml").write_text("bogus: 1\n")
    assert scale.main([str(tmp_path), "--rollout-workers", "2"]) == 2 and "bogus" in capsys.readouterr().err


def test_a_run_recorded_before_the_policy_keys_moved_is_compared_under_their_new_names(tmp_path):
    """ppo.lr and its kin became policy.*: resuming a run whose config.yaml has ppo.lr with another
    policy.lr must name the change, not skip a key only one side knows."""
    import yaml

    from cluster.run_dir import config_changes
    from configs.schema import config_tree

    config = load_config("tiny")
    recorded = config_tree(config)
    recorded["ppo"]["lr"] = recorded["policy"].pop("lr") * 10  # as an earlier version wrote it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded))
    assert config_changes(tmp_path, config_tree(config)) == [
        f"policy.lr: {config.policy.lr * 10!r} -> {config.policy.lr!r}"]
    recorded["ppo"]["lr"] = config.policy.lr
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded))
    assert config_changes(tmp_path, config_tree(config)) == []


def test_an_iteration_whose_checkpoint_would_not_fit_is_refused_before_it_starts(tmp_path, monkeypatch):
    import shutil

    from cluster.run_dir import RunDirError, check_room_for_checkpoint, checkpoint_dir, mark_complete

    check_room_for_checkpoint(tmp_path)  # no checkpoint yet: nothing to measure by
    folder = checkpoint_dir(tmp_path, 1)
    (folder / "policy").mkdir(parents=True)
    (folder / "policy" / "model.safetensors").write_bytes(b"\0" * 3000)
    mark_complete(tmp_path, 1, {})
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=3100))
    check_room_for_checkpoint(tmp_path)  # 3000 bytes of weights and a small state.json fit
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2000))
    with pytest.raises(RunDirError, match=r"disk nearly full: 0.0 GiB free .* last checkpoint \(iter-1\).*"
                                          r"--resume: the run stopped after iteration 1"):
        check_room_for_checkpoint(tmp_path)
