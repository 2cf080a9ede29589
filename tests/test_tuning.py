"""The tuning service's logic (serve/tuning.py) without Ray: uploaded prompts checked line by line,
a job's settings checked before anything starts, queueing under the concurrency limit, Ray job
statuses mapped to OpenAI's, events and checkpoints read from the run directory, and records that
outlive the server. tests/test_serve.py::test_tuning_service_with_the_openai_client drives the
same service through the Serve app, the official openai client and real Ray jobs."""

import json
import shlex

import pytest

from configs.schema import load_config
from serve.tuning import ServiceError, TuningService, job_overrides, prompt_rows

pytestmark = pytest.mark.unit

PROMPTS = b'{"prompt": "What is an atom?", "reference": "The smallest unit of matter."}\n' \
          b'\n{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}\n'


class FakeJobClient:
    """Ray's JobSubmissionClient as the service uses it: submit, status, stop."""

    def __init__(self):
        self.submitted, self.stopped, self.status = {}, [], {}

    def submit_job(self, entrypoint, submission_id, runtime_env, metadata):
        self.submitted[submission_id] = entrypoint
        self.status[submission_id] = "PENDING"

    def get_job_status(self, job_id):
        return self.status[job_id]

    def stop_job(self, job_id):
        self.stopped.append(job_id)
        self.status[job_id] = "STOPPED"


@pytest.fixture
def service(tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDLESS_STATE_DIR", str(tmp_path / "state"))
    client = FakeJobClient()
    config = load_config("tiny")
    made = TuningService(config, "tiny", [], lambda: client, lambda: {"CPU": 4.0})
    made.fake = client
    return made


def _error(call, *args) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call(*args)
    return caught.value


def test_uploaded_prompts_become_loader_rows_and_a_bad_line_is_named():
    assert prompt_rows(PROMPTS, 10_000) == [{"prompt": "What is an atom?", "reference": "The smallest unit of matter."},
                                            {"prompt": "Hi"}]
    for data, problem in [
        (b'{"prompt": "ok"}\n{"prompt": "cut', "line 2: invalid JSON"),
        (b'{"prompt": "ok"}\n\n["a list"]', "line 3: expected an object"),
        (b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
         "line 1: 'messages' must end with a user turn"),
        (b'{"question": "q"}', "line 1: expected 'prompt' or 'messages', got fields ['question']"),
        (b'{"prompt": "q", "reference": 3}', "line 1: field 'reference' must be a string"),
        (b'{"prompt": "  "}', "line 1: field 'prompt' must be a non-empty string"),
        (b"\xff\xfe", "not UTF-8"), (b"\n\n", "no prompts"),
    ]:
        error = _error(prompt_rows, data, 10_000)
        assert problem in error.message and error.status == 400 and error.param == "file"
    assert "over this server's limit 10" in _error(prompt_rows, PROMPTS, 10).message


def test_hyperparameters_and_config_map_to_overrides_and_unknown_names_are_refused():
    method = {"type": "crowdless", "crowdless": {"hyperparameters": {"n_iterations": 3, "learning_rate": 1e-5,
                                                                     "kl_coef": "auto"}}}
    assert job_overrides(method, {"ranking": {"order": "random"}}) == [
        "run.iterations=3", "policy.lr=1e-05", 'ranking.order="random"']
    unknown = _error(job_overrides, {"type": "crowdless", "crowdless": {"hyperparameters": {"lr": 1}}}, None)
    assert unknown.param == "method.crowdless.hyperparameters.lr" and "n_iterations" in unknown.message
    assert _error(job_overrides, {"type": "supervised"}, None).param == "method.type"
    for reserved in ({"run": {"dir": "/tmp/x"}}, {"serve": {"port": 1}}, {"data": {"source": "x.jsonl"}}):
        assert "set by the service" in _error(job_overrides, None, reserved).message


def test_a_job_is_checked_before_anything_starts(service):
    upload = service.create_file("prompts.jsonl", PROMPTS, "fine-tune")
    assert upload["id"].startswith("file-") and upload["prompts"] == 2
    cases = [
        ({"model": "gpt-4o", "training_file": upload["id"]}, "model"),
        ({"model": "embedded:tiny-llama", "training_file": "file-missing"}, "training_file"),
        ({"model": "embedded:tiny-llama", "training_file": upload["id"], "validation_file": "file-x"},
         "validation_file"),
        ({"model": "embedded:tiny-llama", "training_file": upload["id"], "config": {"policy": {"lr": -1}}},
         "config.policy.lr"),
        ({"model": "embedded:tiny-llama", "training_file": upload["id"], "config": {"policy": {"nope": 1}}},
         "config.policy.nope"),
        ({"model": "embedded:tiny-llama", "training_file": upload["id"],
          "config": {"resources": {"learner_cpus": 16}}}, "config"),
    ]
    for request, param in cases:
        error = _error(service.create_job, request)
        assert error.param == param and 400 <= error.status < 500, (param, error.message)
    assert "the Ray cluster has 4" in _error(service.create_job, cases[-1][0]).message
    assert service.fake.submitted == {} and service.list_jobs()["data"] == []  # nothing started, nothing kept
    assert _error(service.create_file, "x.jsonl", PROMPTS, "assistants").param == "purpose"
    assert _error(service.get_job, "ftjob-none").status == 404


def test_jobs_queue_run_succeed_cancel_and_outlive_the_server(service, tmp_path):
    upload = service.create_file("prompts.jsonl", PROMPTS, "fine-tune")
    request = {"model": "embedded:tiny-llama", "training_file": upload["id"], "suffix": "atoms", "seed": 3,
               "method": {"type": "crowdless", "crowdless": {"hyperparameters": {"n_iterations": 2}}}}
    first = service.create_job(request)
    second = service.create_job({**request, "suffix": None})
    assert first["status"] == second["status"] == "queued" and first["hyperparameters"]["n_iterations"] == 2
    # one slot (service.max_concurrent_jobs): the first is submitted, the second waits
    assert list(service.fake.submitted) == [first["id"]]
    command = shlex.split(service.fake.submitted[first["id"]])
    assert command[1].endswith("jobs/train.py") and "run.iterations=2" in command and "run.seed=3" in command
    run_dir = tmp_path / "state" / "jobs" / first["id"]
    assert command[command.index("--run-dir") + 1] == str(run_dir)
    assert f"data.source={tmp_path / 'state' / 'files' / upload['id']}.jsonl" in command

    service.fake.status[first["id"]] = "RUNNING"
    service.refresh()
    assert service.get_job(first["id"])["status"] == "running"
    # the run writes its phases and metrics; a complete checkpoint has its state.json
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "events.jsonl").write_text(json.dumps({"time": 1e9, "iteration": 1, "phase": "rollout"}) + "\n")
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"iteration": 0, "time": 1e9, "eval_unseen_chrf": 10.0}) + "\n"
        + json.dumps({"iteration": 1, "time": 1e9 + 5, "response_tokens": 40, "eval_unseen_chrf": 11.0}) + "\n")
    for step in (1, 2):
        (run_dir / "checkpoints" / f"iter-{step}" / "policy").mkdir(parents=True)
    (run_dir / "checkpoints" / "iter-1" / "state.json").write_text("{}")
    (run_dir / "checkpoints" / "latest").symlink_to(run_dir / "checkpoints" / "iter-1")
    name = f"ft:tiny-llama:atoms:{first['id']}"
    assert service.policy_for(name) is None  # not served before it succeeds ...
    assert service.policy_for(f"{name}:ckpt-step-1") == str(run_dir / "checkpoints" / "iter-1" / "policy")
    assert service.policy_for(f"{name}:ckpt-step-2") is None  # ... nor an incomplete checkpoint

    service.fake.status[first["id"]] = "SUCCEEDED"
    service.refresh()
    done = service.get_job(first["id"])
    assert done["status"] == "succeeded" and done["fine_tuned_model"] == name and done["trained_tokens"] == 40
    assert service.policy_for(name) == str(run_dir / "checkpoints" / "iter-1" / "policy")
    assert [m["id"] for m in service.served_models()] == [name]
    assert list(service.fake.submitted) == [first["id"], second["id"]]  # the slot went to the next job

    events = service.events(first["id"], limit=50)["data"]
    messages = [e["message"] for e in events]
    assert messages[0] == "The job has successfully completed."  # newest first
    assert "Iteration 1/2: rollout." in messages and "Iteration 1/2 done." in messages
    metrics_event = next(e for e in events if e["message"] == "Iteration 1/2 done.")
    assert metrics_event["type"] == "metrics" and metrics_event["data"]["eval_unseen_chrf"] == 11.0
    page = service.events(first["id"], after=events[1]["id"], limit=2)
    assert [e["id"] for e in page["data"]] == [e["id"] for e in events[2:4]] and page["has_more"]
    [checkpoint] = service.checkpoints(first["id"])["data"]
    assert checkpoint["step_number"] == 1 and checkpoint["metrics"] == {"step": 1, "eval_unseen_chrf": 11.0}
    assert checkpoint["fine_tuned_model_checkpoint"] == f"{name}:ckpt-step-1"

    cancelled = service.cancel_job(second["id"])
    assert cancelled["status"] == "cancelled" and service.fake.stopped == [second["id"]]
    assert _error(service.cancel_job, second["id"]).status == 400  # only an active job can be cancelled

    # a new server on the same state directory lists the jobs and the file, newest first
    again = TuningService(load_config("tiny"), "tiny", [], lambda: service.fake, lambda: {"CPU": 4.0})
    listed = again.list_jobs()["data"]
    assert [j["id"] for j in listed] == [second["id"], first["id"]]
    assert again.list_jobs(limit=1)["has_more"] and [f["id"] for f in again.list_files()] == [upload["id"]]
    assert again.list_jobs(after=listed[0]["id"])["data"][0]["id"] == listed[1]["id"]
    assert again.delete_file(upload["id"])["deleted"] and again.list_files() == []


def test_a_failed_ray_job_reports_the_drivers_error(service, tmp_path):
    upload = service.create_file("prompts.jsonl", PROMPTS, "fine-tune")
    job = service.create_job({"model": "embedded:tiny-llama", "training_file": upload["id"]})
    logs = tmp_path / "state" / "jobs" / job["id"] / "logs"
    logs.mkdir(parents=True)
    (logs / "driver-error.log").write_text("Traceback ...\nDataError: no usable prompts\n")
    service.fake.status[job["id"]] = "FAILED"
    service.refresh()
    failed = service.get_job(job["id"])
    assert failed["status"] == "failed" and failed["error"]["message"] == "DataError: no usable prompts"
    assert failed["fine_tuned_model"] is None and failed["finished_at"] is not None


def test_a_job_the_ray_job_api_refuses_stays_queued_and_is_submitted_later(service):
    """Right after a cluster starts, Ray's job API may answer "No available agent to submit job":
    the create call still succeeds, the job waits queued, and a later refresh submits it."""
    upload = service.create_file("prompts.jsonl", PROMPTS, "fine-tune")
    submit = service.fake.submit_job
    refusals = []

    def refuse_once(**kwargs):
        if not refusals:
            refusals.append(kwargs["submission_id"])
            raise RuntimeError("Request failed with status code 500: No available agent to submit job")
        submit(**kwargs)

    service.fake.submit_job = refuse_once
    job = service.create_job({"model": "embedded:tiny-llama", "training_file": upload["id"]})
    assert job["status"] == "queued" and service.fake.submitted == {} and refusals == [job["id"]]
    service.refresh()
    assert list(service.fake.submitted) == [job["id"]] and service.get_job(job["id"])["status"] == "queued"
