"""The real job, end to end: Ray + vLLM + DeepSpeed on the tiny model, a resume, a
`ray job submit` against a `ray start --head` cluster, and one run on the embedded SmolLM2."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from ray_cluster import free_port, node_ports, stop_cluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
ENV = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
ENV.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


EVAL = ("eval.every=1", "eval.agreement_prompts=3")
SECRET = "sekrit-e2e-key-4711"  # serve.api_key: must reach no file of the run


def _train(*args, env=None, timeout=900):
    result = subprocess.run([sys.executable, "jobs/train.py", *args], cwd=ROOT, env=env or ENV,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_two_iterations_then_resume(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    run_dir = tmp_path / "run"
    out = _train("--config", "tiny", "--run-dir", str(run_dir), *EVAL, f"serve.api_key={SECRET}")
    assert "[iter 2/2]" in out and "done: 2 iterations" in out
    holding_key = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert holding_key == [] and "api_key: '***'" in (run_dir / "config.yaml").read_text()
    # the terminal holds the run's own lines; engine and library logs went to RUN_DIR/logs/
    assert out.startswith(f"crowdless: {run_dir} (new run, 2 iterations)")
    assert len(out.splitlines()) < 50 and " INFO " not in out and "pid=" not in out
    logs = {path.name.split("-")[0]: path.read_text() for path in (run_dir / "logs").iterdir()}
    assert {"learner", "rollout", "ranker"} <= set(logs)
    assert "KV cache" in logs["rollout"]  # vLLM's own start-up report
    assert len((run_dir / "samples" / "iter-1.jsonl").read_text().splitlines()) == 4
    metrics = _metrics(run_dir)
    assert [m["iteration"] for m in metrics] == [0, 1, 2]  # 0: the held-out baseline
    for m in metrics:  # eval.every=1: every iteration and the baseline are judged on the three sets
        for name in ("trained", "unseen", "ood"):
            for key in ("bleu", "chrf", "cosine", "token_f1", "ref_logprob", "loop", "length", "truncated",
                        "distinct_2"):
                assert m[f"eval_{name}_{key}"] is not None
            assert m[f"eval_{name}_ref_logprob"] < 0
    sets = json.loads((run_dir / "eval" / "sets.json").read_text())
    samples = [json.loads(line)["prompt"] for i in (1, 2)
               for line in (run_dir / "samples" / f"iter-{i}.jsonl").read_text().splitlines()]
    assert [d["prompt"] for d in sets["trained"]] == list(dict.fromkeys(samples))  # what the run trained on
    assert not {d["prompt"] for d in sets["trained"]} & {d["prompt"] for d in sets["unseen"]}
    assert "evaluation (distinct prompts: trained 8, unseen" in out
    assert "iteration 2 vs the starting model: trained: " in out and "; ood: " in out
    assert "answer order agreement with the reference (4 answers, 3 prompts" in out
    assert (run_dir / "eval" / "report.md").exists() and (run_dir / "eval" / "metrics_over_iterations.png").exists()
    metrics = metrics[1:]
    for m in metrics:
        assert m["pairs"] > 0
        assert 0 <= m["rm_train_accuracy"] <= 1 and m["rm_loss"] == m["rm_loss"]  # trained, not NaN
        assert m["kl"] >= 0 and m["kl"] == m["kl"] and m["kl"] < float("inf")
        for key in ("reward_mean", "rm_loss", "rm_accuracy", "policy_loss", "value_loss",
                    "seconds_rollout", "seconds_rank", "seconds_reward_model", "seconds_policy",
                    "seconds_weight_sync", "seconds_checkpoint", "answers_kept", "lowest_answer_rejected",
                    "noised_pair_share", "pair_score_gap"):
            assert key in m
        assert m["noised_pair_share"] <= 0.5
    assert metrics[0]["kl"] == 0.0  # the first rollout comes from the reference policy itself
    assert metrics[1]["kl"] > 0
    # the rollout engine sampled iteration 2 with the weights PPO produced in iteration 1
    assert metrics[1]["engine_logprob_gap"] < 0.02

    latest = run_dir / "checkpoints" / "latest"
    assert latest.resolve().name == "iter-2"
    policy = AutoModelForCausalLM.from_pretrained(latest / "policy")
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(policy.state_dict().values(), start.state_dict().values()))
    AutoModelForSequenceClassification.from_pretrained(latest / "reward_model")
    assert (run_dir / "config.yaml").exists() and any((run_dir / "tensorboard").iterdir())

    # without --resume an existing run is never overwritten
    refused = subprocess.run([sys.executable, "jobs/train.py", "--config", "tiny", "--run-dir", str(run_dir)],
                             cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr

    out = _train("--config", "tiny", "--run-dir", str(run_dir), "--resume", "run.iterations=3", *EVAL,
                 f"serve.api_key={SECRET}")
    assert "resuming" in out and "[iter 3/3]" in out and "[iter 1/3]" not in out
    assert "optimizer state of policy, reward_model, value_model" in out  # exact resume
    assert [m["iteration"] for m in _metrics(run_dir)] == [0, 1, 2, 3]
    assert latest.resolve().name == "iter-3"
    # only the latest checkpoint keeps the optimizer state; every checkpoint keeps its weights
    assert (latest / "training_state" / "policy").is_dir()
    for older in ("iter-1", "iter-2"):
        folder = run_dir / "checkpoints" / older
        assert (folder / "policy" / "config.json").exists() and not (folder / "training_state").exists()

    # jobs/evaluate.py: every checkpoint against the base model, paired intervals, report and plots
    result = subprocess.run([sys.executable, "jobs/evaluate.py", "--run-dir", str(run_dir), "--checkpoints", "all"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert set(saved["comparisons"]) == {"iter-1", "iter-2", "iter-3"}
    assert set(saved["comparisons"]["iter-3"]) == {"trained", "unseen", "ood"}
    row = saved["comparisons"]["iter-3"]["unseen"]
    for key in ("bleu", "chrf", "gleu", "token_f1", "exact_match", "cosine", "ref_logprob", "loop", "length",
                "truncated"):
        assert row[key]["low"] <= row[key]["difference"] <= row[key]["high"]
    assert "meteor" in row or "meteor_nosyn" in row
    # the starting model judged twice, by the learner in the run and from disk here: the same figures
    answers = run_dir / "eval" / "answers" / "unseen"
    in_run = [json.loads(line) for line in (answers / "iter-0.jsonl").read_text().splitlines()]
    from_disk = [json.loads(line) for line in (answers / "baseline.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in in_run] == [r["answer"] for r in from_disk]
    for a, b in zip(in_run, from_disk):
        assert a["ref_logprob"] == pytest.approx(b["ref_logprob"], abs=1e-3)
    assert saved["agreement"]["agreement_answers"] == 4
    assert 0 <= saved["agreement"]["reward_model_full_order"] <= 1
    assert (run_dir / "eval" / "answer_lengths.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, "jobs/evaluate.py", "--run-dir", str(run_dir), "--checkpoints", "7"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert bad.returncode == 2 and "no complete checkpoint for iterations [7]" in bad.stderr

    # jobs/reference_tokens.py: where the references' log-probability moved, token by token
    result = subprocess.run([sys.executable, "jobs/reference_tokens.py", "--run-dir", str(run_dir), "--set", "unseen"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shift = json.loads((run_dir / "eval" / "reference_tokens-iter-3-unseen.json").read_text())
    assert shift["iteration"] == 3 and shift["references"] >= len(in_run)
    assert {"first", "position_0"} <= set(shift) and shift["first"] == pytest.approx(shift["position_0"])
    bad = subprocess.run([sys.executable, "jobs/reference_tokens.py", "--run-dir", str(run_dir), "--set", "nope"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert bad.returncode == 2 and "--set 'nope'" in bad.stderr

    # jobs/policy_drift.py and jobs/pairs_report.py: label-free diagnostics from the run's samples
    result = subprocess.run([sys.executable, "jobs/policy_drift.py", str(run_dir), "--answers", "8"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    drift = json.loads((run_dir / "eval" / "policy_drift.json").read_text())
    assert set(drift) == {"1", "2"} and all(value == value for value in drift.values())  # finite, not NaN
    result = subprocess.run([sys.executable, "jobs/pairs_report.py", str(run_dir)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((run_dir / "eval" / "pairs_report.json").read_text())
    assert set(report) == {"1", "2", "3"} and all(0 <= r["answer_echoes"] <= 1 for r in report.values())


@pytest.mark.parametrize("objective", ["grpo", "rloo", "reinforce_pp", "dpo", "listwise"])
def test_tiny_run_per_objective(objective, tmp_path, tiny_model_dir):
    """Critic-free objectives with the ranker's scores as reward, and the preference objectives:
    two iterations through Ray + vLLM + DeepSpeed, no reward or value model built."""
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / objective
    anchor = ["policy.forward_kl_coef=0.1"] if objective == "dpo" else []  # the full-vocabulary KL anchor
    out = _train("--config", "tiny", "--run-dir", str(run_dir), f"policy.objective={objective}",
                 "reward.source=ranker", *anchor)
    assert "[iter 2/2]" in out
    metrics = _metrics(run_dir)
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert all(m["policy_loss"] is not None for m in metrics) and "rm_loss" not in metrics[0]
    assert all((m.get("forward_kl", -1) >= 0) == bool(anchor) for m in metrics)
    # the KL to the start on each iteration's own samples: none until the policy has trained once
    assert metrics[0]["policy_drift"] == 0 and metrics[1]["policy_drift"] != 0
    latest = run_dir / "checkpoints" / "latest"
    assert sorted(p.name for p in latest.iterdir() if p.is_dir()) == ["policy", "training_state"]
    assert sorted(p.name for p in (latest / "training_state").iterdir() if p.is_dir()) == ["policy"]
    policy = AutoModelForCausalLM.from_pretrained(latest / "policy")
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(policy.state_dict().values(), start.state_dict().values()))
    if objective == "grpo":  # a run without reward or value model resumes too
        _train("--config", "tiny", "--run-dir", str(run_dir), "--resume", "run.iterations=3",
               f"policy.objective={objective}", "reward.source=ranker")
        assert [m["iteration"] for m in _metrics(run_dir)] == [1, 2, 3]


def test_a_run_past_its_drift_budget_ends_on_the_policy_that_reached_it(tmp_path):
    """run.stop_at_drift: iteration 2 finds that the policy iteration 1 trained has drifted past the
    budget, trains nothing, and the run ends on iteration 1's policy: judged although eval.every
    skipped it, left as the latest checkpoint, and not trained again on resume."""
    run_dir = tmp_path / "run"
    args = ("--config", "tiny", "--run-dir", str(run_dir), "policy.objective=dpo", "reward.source=ranker",
            "run.iterations=3", "run.stop_at_drift=1e-6", "eval.every=2", "eval.agreement_prompts=0")
    out = _train(*args)
    assert "[iter 1/3]" in out and "[iter 2/3]" not in out
    assert "stopping at iteration 2: policy_drift" in out and "the run ends on iteration 1's policy" in out
    assert "done: 1 iterations" in out and "iteration 1 vs the starting model: trained: " in out
    stop = json.loads((run_dir / "stopped.json").read_text())
    assert stop["iteration"] == 2 and stop["policy_drift"] >= stop["stop_at_drift"] == 1e-6
    assert (run_dir / "checkpoints" / "latest").resolve().name == "iter-1"
    metrics = _metrics(run_dir)
    assert [m["iteration"] for m in metrics] == [0, 1] and metrics[1]["eval_unseen_chrf"] is not None
    assert (run_dir / "eval" / "answers" / "unseen" / "iter-1.jsonl").exists()
    out = _train(*args, "--resume")
    assert "stopped at iteration 2" in out and "workers ready" not in out


def _worker_pid(run_dir: Path, name: str, exclude: set[int]) -> int:
    """The pid of a live worker, from its log file RUN_DIR/logs/NAME-PID.log."""
    pids = {int(path.stem.split("-")[1]) for path in (run_dir / "logs").glob(f"{name}-*.log")} - exclude
    assert len(pids) == 1, pids
    return pids.pop()


def test_drills_a_frozen_rollout_worker_and_a_ranker_killed_mid_ranking(tmp_path):
    """Fault drills on the real job: the rollout worker is frozen with SIGSTOP as iteration 2 starts
    (its engine never answers: the chunk deadline kills and replaces it), and the ranker is frozen as
    iteration 3 starts, then killed while the iteration's ranking waits on it (replaced at once).
    The job completes; every prompt of every iteration is answered once, no iteration lost or repeated."""
    run_dir = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "jobs/train.py", "--config", "tiny", "--run-dir", str(run_dir),
                            "run.iterations=3", "resources.rollout_timeout_s=60", "resources.max_worker_restarts=2"],
                           cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    lines, frozen = [], set()
    try:
        for line in job.stdout:
            lines.append(line)
            if line.startswith("[iter 1/3]"):
                frozen.add(pid := _worker_pid(run_dir, "rollout", frozen))
                os.kill(pid, signal.SIGSTOP)
            if line.startswith("[iter 2/3]"):
                frozen.add(pid := _worker_pid(run_dir, "ranker", frozen))
                os.kill(pid, signal.SIGSTOP)
                time.sleep(10)  # iteration 3's rollout (seconds on the tiny model), then its ranking waits
                os.kill(pid, signal.SIGKILL)
        assert job.wait(timeout=900) == 0, "".join(lines[-30:])
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    out = "".join(lines)
    assert "rollout worker 0 did not answer in time" in out and "ranker worker 0 was lost" in out
    metrics = _metrics(run_dir)
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    assert metrics[0]["worker_events"] == []
    assert ["did not answer in time" in e for e in metrics[1]["worker_events"]] == [True]
    assert ["ranker worker 0 was lost" in e for e in metrics[2]["worker_events"]] == [True]
    sys.path.insert(0, str(ROOT / "jobs"))
    from train import prompts_for_iteration

    from configs.schema import load_config
    from crowdless.data.prompt_sets import load_prompt_split

    config = load_config("tiny")
    train_prompts = load_prompt_split(config.data, config.run.seed)[0]
    for iteration in (1, 2, 3):
        groups = [json.loads(line) for line in (run_dir / "samples" / f"iter-{iteration}.jsonl").read_text().splitlines()]
        expected = [p.prompt for p in prompts_for_iteration(train_prompts, iteration, 4, config.run.seed)]
        assert [g["prompt"] for g in groups] == expected and all(len(g["answers"]) == 4 for g in groups)


def test_scaling_rollout_workers_while_the_job_runs(tmp_path):
    """jobs/scale.py on a running tiny job: 2 rollout workers from the first iteration it reads the
    control file at; then a size the cluster has no room for is refused on the iteration line,
    naming the CPUs missing, and the job goes on with 2."""
    run_dir = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "jobs/train.py", "--config", "tiny", "--run-dir", str(run_dir),
                            "run.iterations=3", "resources.rollout_cpus=0.25"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "config.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        scaled = subprocess.run([sys.executable, "jobs/scale.py", str(run_dir), "--rollout-workers", "2"], cwd=ROOT,
                                env=ENV, capture_output=True, text=True)
        assert scaled.returncode == 0, scaled.stderr
        for line in job.stdout:
            lines.append(line)
            if line.startswith("[iter 1/3]"):
                (run_dir / "control.yaml").write_text("rollout_workers: 50\n")
        assert job.wait(timeout=900) == 0, "".join(lines[-30:])
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    metrics = _metrics(run_dir)
    assert [m["rollout_workers"] for m in metrics] == [2, 2, 2]
    assert sum(metrics[0]["rollout_prompts_per_worker"]) == 4 and metrics[0]["control_error"] is None
    # read before iteration 2 or, where the driver got there first, before iteration 3
    refused = [m["control_error"] for m in metrics[1:] if m["control_error"]]
    assert refused and "rollout_workers=50 refused" in refused[0] and "CPU" in refused[0]
    assert "control error: rollout_workers=50 refused" in "".join(lines)


def test_a_job_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path):
    """Checkpoint fault drill, with a learner group of 2 ranks: SIGKILL to the whole job (driver, local
    Ray cluster, workers) the moment iteration 2's checkpoint folder appears, while the learner
    writes it; --resume then redoes iteration 2 from checkpoint 1 (both ranks' optimizer states),
    and the record holds every iteration exactly once."""
    run_dir = tmp_path / "run"
    group = ("resources.learner_workers=2", "resources.learner_cpus=0.5")
    job = subprocess.Popen([sys.executable, "jobs/train.py", "--config", "tiny", "--run-dir", str(run_dir),
                            "run.iterations=3", *group], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    being_written = run_dir / "checkpoints" / "iter-2"
    deadline = time.monotonic() + 900
    while not being_written.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert being_written.exists(), "the job ended before it began iteration 2's checkpoint"
    latest = run_dir / "checkpoints" / "latest"
    assert latest.resolve().name == "iter-1" and not (being_written / "state.json").exists()
    assert [m["iteration"] for m in _metrics(run_dir)] == [1]

    out = _train("--config", "tiny", "--run-dir", str(run_dir), "--resume", "run.iterations=3", *group)
    assert "removed incomplete checkpoints of a stopped run: iter-2" in out
    assert "optimizer state of policy, reward_model, value_model" in out
    assert "resuming at iteration 2" in out and "[iter 1/3]" not in out and "[iter 2/3]" in out
    metrics = _metrics(run_dir)
    assert [m["iteration"] for m in metrics] == [1, 2, 3] and metrics[-1]["learner_workers"] == 2
    assert latest.resolve().name == "iter-3"
    for iteration in (1, 2, 3):
        folder = run_dir / "checkpoints" / f"iter-{iteration}"
        assert json.loads((folder / "state.json").read_text())["iteration"] == iteration
        assert (folder / "policy" / "model.safetensors").exists()


def test_a_worker_failure_prints_its_cause(tmp_path):
    run_dir = tmp_path / "too-big"
    result = subprocess.run([sys.executable, "jobs/train.py", "--config", "tiny", "--run-dir", str(run_dir),
                             "rollout.kv_cache_gib=100000"], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    assert "error: ConfigError: rollout.kv_cache_gib: the vLLM KV cache needs 100000.00 GiB" in result.stderr
    assert (run_dir / "logs" / "driver-error.log").exists()


def test_ray_job_submit_on_two_nodes(tmp_path):
    """`ray start --head` and a second node joining it with `ray start --address` on loopback, 2 CPUs
    each; `ray job submit` runs a tiny job whose 2 learner ranks (1.25 CPUs each) cannot share a
    node and whose 2 rollout workers spread: both ran on both nodes, and the checkpoints load."""
    from transformers import AutoModelForCausalLM

    ray = str(Path(sys.executable).parent / "ray")
    # as a user with the venv activated: `python` in the entrypoint is the venv's
    env = {**ENV, "RAY_AUTH_MODE": "disabled",  # loopback-only test cluster: no token auth
           "PATH": f"{Path(sys.executable).parent}:{ENV.get('PATH', '')}"}
    # a folder and ports of its own: a cluster a user runs on this host is neither joined nor stopped
    # (a short folder: Ray's Unix sockets live under it, and their paths are limited to 107 bytes)
    temp_dir = tempfile.mkdtemp(prefix="crowdless-ray-", dir="/tmp")
    # and one for the second node: two raylets sharing a folder share its runtime_resources/, where
    # each node unpacks the job's working_dir and deletes it once its own workers are done with it
    # (the job driver then failed to import a module it had not loaded yet)
    node_dir = tempfile.mkdtemp(prefix="crowdless-ray-", dir="/tmp")
    gcs_port, dashboard_port = free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    started = subprocess.run([ray, "start", "--head", f"--port={gcs_port}", f"--temp-dir={temp_dir}", "--num-cpus=2",
                              "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                              f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
                              *node_ports(), "--disable-usage-stats"], env=env, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stderr
        joined = subprocess.run([ray, "start", f"--address=127.0.0.1:{gcs_port}", f"--temp-dir={node_dir}",
                                 "--num-cpus=2", *node_ports(),
                                 "--disable-usage-stats"], env=env, capture_output=True, text=True)
        assert joined.returncode == 0, joined.stderr
        run_dir = tmp_path / "submitted"
        submit = subprocess.run(
            [ray, "job", "submit", "--address", dashboard, "--working-dir", ".",
             "--runtime-env-json", json.dumps({"env_vars": {"HF_HUB_OFFLINE": "1"},
                                               "excludes": [".venv", "runs", ".git"]}),
             "--", "python", "jobs/train.py", "--config", "configs/tiny.yaml", "--run-dir", str(run_dir),
             "run.iterations=1", "serve.enabled=true", "serve.port=8766", "resources.learner_workers=2",
             "resources.learner_cpus=1.25", "rollout.num_workers=2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "succeeded" in submit.stdout
        [metrics] = _metrics(run_dir)
        assert metrics["iteration"] == 1 and metrics["learner_workers"] == 2
        assert metrics["learner_nodes"] == 2 and metrics["rollout_nodes"] == 2
        assert sum(metrics["rollout_prompts_per_worker"]) == 4  # tiny: 4 prompts, each answered once
        AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "latest" / "policy")
        assert (run_dir / "checkpoints" / "latest" / "training_state" / "rng-rank1.pt").exists()
        # serve.enabled: the job started the Serve app, which outlives it on the cluster
        from openai import OpenAI

        client = OpenAI(base_url="http://127.0.0.1:8766/v1", api_key="none", max_retries=3, timeout=120)
        [model] = client.models.list().data
        assert model.id == "submitted" and model.checkpoint["iteration"] == 1
        reply = client.chat.completions.create(model="submitted", max_tokens=4,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content is not None
    finally:
        # stop the Serve app gracefully first: its replica then shuts its vLLM engine processes down
        subprocess.run([str(Path(sys.executable).parent / "serve"), "shutdown", "-y",
                        "--address", dashboard], env=env, capture_output=True, timeout=120)
        stop_cluster([temp_dir, node_dir], gcs_port)
        for folder in (temp_dir, node_dir):
            shutil.rmtree(folder, ignore_errors=True)


def test_embedded_smollm2_default_small(tmp_path):
    run_dir = tmp_path / "smollm2"
    out = _train("--config", "default", "--run-dir", str(run_dir), "run.iterations=1",
                 "rollout.prompts_per_iteration=2", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=24",
                 "policy.minibatch_size=8", "eval.max_prompts=6", "eval.max_new_tokens=24",
                 "eval.agreement_prompts=2", timeout=1500)
    baseline, metrics = _metrics(run_dir)
    assert baseline["iteration"] == 0 and metrics["eval_unseen_chrf"] is not None
    assert metrics["eval_trained_ref_logprob"] < 0 and metrics["eval_ood_ref_logprob"] < 0
    assert "iteration 1 vs the starting model" in out
    assert metrics["pairs"] > 0 and "rm_loss" not in metrics  # the default trains no reward model
    # ... so the answer-order check judges the policy's implicit reward in its place
    agreement = json.loads((run_dir / "eval" / "metrics.json").read_text())["agreement"]
    assert 0 <= agreement["implicit_reward_full_order"] <= 1 and "reward_model_full_order" not in agreement
    assert "implicit reward" in out
    assert 0.0 <= metrics["reward_accuracy"] <= 1.0 and math.isfinite(metrics["dpo_loss"])
    assert metrics["response_length"] > 1
    assert (run_dir / "checkpoints" / "latest" / "policy" / "model.safetensors").exists()
