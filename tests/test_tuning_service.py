"""Tuning as a service, end to end: `python -m serve` on the tiny model serves the files and
fine-tuning jobs API beside the model, with no extra flag; the official openai client uploads
prompts, creates a job that runs as a real Ray job, polls it to succeeded, reads its events and
checkpoints, chats with the fine-tuned model by name, cancels a second job mid-run, and finds
both jobs and the file again after the server restarts. Bad requests get OpenAI-shaped errors
naming the problem, and start nothing. The server joins a `ray start --head` cluster of the
test's own (its folder and ports): a Ray instance started in-process beside another one on the
host would share the default agent ports, and its job API would find no agent."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ray_cluster import free_port, node_ports, stop_cluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "tuning-key"
PROMPTS = "".join(json.dumps(row) + "\n" for row in [
    {"prompt": "What is an atom?", "reference": "The smallest unit of matter."},
    {"prompt": "What is gravity?", "reference": "The force that pulls masses together."},
    {"messages": [{"role": "user", "content": "Who wrote Hamlet?"}], "reference": "William Shakespeare."},
    {"prompt": "What is a cell?", "reference": "The basic unit of life."},
    {"prompt": "What is light?", "reference": "Electromagnetic radiation we can see."},
    {"prompt": "What is water made of?", "reference": "Hydrogen and oxygen."},
])


class Cluster:
    """`ray start --head` on loopback with a folder and ports of its own, 2 CPUs (as CI has)."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="crowdless-ray-", dir="/tmp")  # short: socket paths
        self.gcs_port = free_port()
        self.env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        self.env.update(RAY_AUTH_MODE="disabled", PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        started = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={self.gcs_port}",
             f"--temp-dir={self.temp_dir}", "--num-cpus=2", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}",
             f"--ray-client-server-port={free_port()}", *node_ports(), "--disable-usage-stats"],
            env=self.env, capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        self.address = f"127.0.0.1:{self.gcs_port}"

    def stop(self) -> None:
        stop_cluster([self.temp_dir], self.gcs_port)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Server:
    """`python -m serve` in a process group of its own, joined to the test's cluster."""

    def __init__(self, cluster: Cluster, state_dir: Path, log: Path):
        self.port = free_port()
        env = dict(cluster.env, RAY_ADDRESS=cluster.address, CROWDLESS_STATE_DIR=str(state_dir),
                   CROWDLESS_API_KEY=API_KEY, HF_HUB_OFFLINE="1")
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serve", "--model", "embedded:tiny-llama", "--config", "configs/tiny.yaml",
             "--port", str(self.port), "serve.poll_seconds=0.5", "rollout.max_model_len=256"],
            cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        from openai import OpenAI

        self.client = OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=API_KEY, max_retries=0,
                             timeout=300)
        deadline = time.time() + 600
        while True:
            assert self.process.poll() is None, log.read_text()[-3000:]
            try:
                self.client.models.list()
                break
            except Exception:
                assert time.time() < deadline, log.read_text()[-3000:]
                time.sleep(2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # serve shuts its app down, then exits
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _poll(client, job_id: str, statuses: set[str], timeout: float = 900):
    deadline = time.time() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert job.status not in {"failed", "cancelled", "succeeded"} - statuses, job
        assert time.time() < deadline, job
        time.sleep(2)


def test_tuning_service_with_the_openai_client(tmp_path):
    state = tmp_path / "state"
    cluster = Cluster()
    try:
        _tune_restart_and_find_again(cluster, state, tmp_path / "server.log")
    finally:
        cluster.stop()


def _tune_restart_and_find_again(cluster: Cluster, state: Path, log: Path) -> None:
    import openai

    server = Server(cluster, state, log)
    try:
        client = server.client
        upload = client.files.create(file=("prompts.jsonl", PROMPTS.encode()), purpose="fine-tune")
        assert upload.id.startswith("file-") and upload.bytes == len(PROMPTS.encode())

        # bad requests: each an OpenAI-shaped error naming the problem, and nothing started
        with pytest.raises(openai.BadRequestError) as bad_line:
            client.files.create(file=("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": 3}\n'), purpose="fine-tune")
        assert "line 2" in bad_line.value.body["message"] and bad_line.value.body["param"] == "file"
        tiny = {"model": "embedded:tiny-llama", "training_file": upload.id}
        for request, param in [
            ({**tiny, "model": "gpt-4o-mini"}, "model"),
            ({**tiny, "training_file": "file-0000"}, "training_file"),
            ({**tiny, "method": {"type": "crowdless", "crowdless": {"hyperparameters": {"warmup": 3}}}},
             "method.crowdless.hyperparameters.warmup"),
            ({**tiny, "extra_body": {"config": {"policy": {"lr": "fast"}}}}, "config.policy.lr"),
        ]:
            with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as caught:
                client.fine_tuning.jobs.create(**request)
            assert caught.value.body["param"] == param, caught.value.body
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-000000")
        assert client.fine_tuning.jobs.list().data == []

        started = time.time()
        job = client.fine_tuning.jobs.create(
            model="embedded:tiny-llama", training_file=upload.id, suffix="atoms", seed=1,
            method={"type": "crowdless", "crowdless": {"hyperparameters": {"n_iterations": 1}}},
            extra_body={"config": {"rollout": {"prompts_per_iteration": 2}, "data": {"eval_fraction": 0.34},
                                   "eval": {"every": 1, "max_prompts": 4, "agreement_prompts": 1}}})
        assert job.status == "queued" and job.model == "embedded:tiny-llama"
        done = _poll(client, job.id, {"succeeded"})
        assert done.fine_tuned_model == f"ft:tiny-llama:atoms:{job.id}" and done.trained_tokens > 0
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        first_iteration = min(e.created_at for e in events if e.message.startswith("Iteration 1/1:"))
        messages = [e.message for e in events]
        assert messages[0] == "The job has successfully completed."
        assert "Iteration 1/1: rollout." in messages and "Iteration 1/1: policy." in messages
        [metrics] = [e for e in events if e.message == "Iteration 1/1 done."]
        assert metrics.type == "metrics" and metrics.data["pairs"] > 0
        [checkpoint] = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert checkpoint.step_number == 1 and "eval_unseen_chrf" in checkpoint.metrics.model_dump()

        names = [m.id for m in client.models.list().data]
        assert done.fine_tuned_model in names
        asked = time.time()
        reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                               messages=[{"role": "user", "content": "What is an atom?"}])
        swap_in = time.time() - asked
        assert reply.choices[0].message.content is not None and reply.model == done.fine_tuned_model
        assert client.completions.create(model=checkpoint.fine_tuned_model_checkpoint, prompt="Hi",
                                         max_tokens=3).choices[0].text is not None
        print(f"\n[tuning] submit to first iteration {first_iteration - started:.0f}s, "
              f"fine-tuned model swap-in {swap_in:.1f}s (first chat request)")

        second = client.fine_tuning.jobs.create(
            model="embedded:tiny-llama", training_file=upload.id,
            method={"type": "crowdless", "crowdless": {"hyperparameters": {"n_iterations": 50}}})
        _poll(client, second.id, {"running"})
        cancelled = client.fine_tuning.jobs.cancel(second.id)
        assert cancelled.status == "cancelled"
        deadline = time.time() + 120
        while _ray_job_processes(second.id):  # the Ray job stops: its driver exits
            assert time.time() < deadline, "the cancelled job's driver still runs"
            time.sleep(2)
    finally:
        server.stop()

    server = Server(cluster, state, log)
    try:
        # the API key guards the tuning routes as every other /v1 route
        for path in ("/v1/files", "/v1/fine_tuning/jobs", f"/v1/fine_tuning/jobs/{job.id}/events"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=60)
            assert refused.value.code == 401
        listed = {j.id: j.status for j in server.client.fine_tuning.jobs.list().data}
        assert listed == {job.id: "succeeded", second.id: "cancelled"}
        assert [f.id for f in server.client.files.list().data] == [upload.id]
        assert done.fine_tuned_model in [m.id for m in server.client.models.list().data]
    finally:
        server.stop()


def _ray_job_processes(job_id: str) -> str:
    """Command lines of live processes that run this job's driver (its run directory names the job)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if job_id in command and "train.py" in command:
            found.append(command)
    return "\n".join(found)
