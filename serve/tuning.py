"""Tuning as a service: OpenAI's files and fine-tuning jobs API over Ray jobs.

A user uploads prompts (no answers, no grader), creates a job naming a model and the file, and
gets a model name back that the Serve app answers under once the job succeeds. Each job is one
`jobs/train.py` run, submitted through Ray's job API (JobSubmissionClient) to the cluster the
Serve app runs on; its run directory lives under the service's state directory, with the job
and file records in a SQLite database beside it (serve/store.py), so a restarted server lists
earlier jobs and re-attaches to Ray jobs still running.

    STATE_DIR/crowdless.db        files and jobs
    STATE_DIR/files/ID.jsonl      an uploaded file, as the loaders read it ({"prompt", "reference"})
    STATE_DIR/jobs/ID/            a job's run directory (checkpoints, metrics.jsonl, events.jsonl)

Statuses follow OpenAI's: validating_files (the checks of create, before it returns), queued
(waiting for one of service.max_concurrent_jobs slots, or for Ray to start it), running,
succeeded, failed (with an error object), cancelled.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from configs.schema import ConfigError, CrowdlessConfig, flat_keys, load_config, resolve_config_path
from crowdless.data.prompt_sets import DataError, prompt_example
from serve.store import Store

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR_ENV = "CROWDLESS_STATE_DIR"

# method.crowdless.hyperparameters: OpenAI-style names for the config keys users tune most.
HYPERPARAMETERS = {
    "n_iterations": "run.iterations",
    "objective": "policy.objective",
    "learning_rate": "policy.lr",
    "kl_coef": "policy.kl_coef",
    "beta": "policy.beta",
    "n_epochs": "policy.epochs",
    "batch_size": "policy.minibatch_size",
    "prompts_per_iteration": "rollout.prompts_per_iteration",
    "samples_per_prompt": "rollout.samples_per_prompt",
}
# Keys a job may not set through extra_body's config: the service sets them, or they would start
# servers and directories of their own on the cluster.
SERVICE_KEYS = ("run.dir", "model.policy", "data.source", "data.eval_source", "serve.", "service.")
RAY_STATUS = {"PENDING": "queued", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
              "STOPPED": "cancelled"}
ACTIVE = ("validating_files", "queued", "running")


class ServiceError(Exception):
    """An OpenAI-shaped error: HTTP status, message, the request field it is about."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def state_dir(config: CrowdlessConfig) -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or config.serve.state_dir).expanduser().resolve()


# ---- files ---------------------------------------------------------------------------------
def prompt_rows(data: bytes, max_bytes: int) -> list[dict]:
    """An uploaded prompts file as the loaders read it: one {"prompt", "reference"?} per line.
    A line is {"prompt": ...} or {"messages": [...]} ending in a user turn (its content is the
    prompt; earlier turns are not trained on), with an optional "reference" answer kept for the
    held-out judge. Raises ServiceError naming the first bad line."""
    if len(data) > max_bytes:
        raise ServiceError(400, f"file is {len(data)} bytes, over this server's limit {max_bytes} "
                                "(service.max_file_bytes)", "file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ServiceError(400, f"file is not UTF-8 text ({error.reason} at byte {error.start})", "file") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rows.append(_prompt_row(line, f"line {number}"))
    if not rows:
        raise ServiceError(400, "file holds no prompts (one JSON object per line expected)", "file")
    return rows


def _prompt_row(line: str, where: str) -> dict:
    def bad(message: str) -> ServiceError:
        return ServiceError(400, f"{where}: {message}", "file")

    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise bad(f"invalid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise bad(f"expected an object with 'prompt' or 'messages', got {type(row).__name__}")
    if "prompt" in row:
        prompt = row["prompt"]
    elif "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise bad("'messages' must be a non-empty list of {'role', 'content'} objects")
        if messages[-1].get("role") != "user":
            raise bad(f"'messages' must end with a user turn (the prompt), not {messages[-1].get('role')!r}")
        prompt = messages[-1].get("content")
    else:
        raise bad(f"expected 'prompt' or 'messages', got fields {sorted(row)}")
    try:  # the checks the training loaders make of every prompt row
        example = prompt_example({"prompt": prompt, "reference": row.get("reference")}, "prompt", "reference")
    except DataError as error:
        raise bad(str(error)) from None
    return {"prompt": example.prompt, **({"reference": example.reference} if example.reference else {})}


# ---- job settings --------------------------------------------------------------------------
def job_overrides(method: dict | None, extra_config: dict | None) -> list[str]:
    """Config overrides (key=value) of a job's method hyperparameters and extra_body config.
    Names are checked here; values by the config schema (create_job)."""
    overrides = []
    method = method or {"type": "crowdless"}
    if method.get("type", "crowdless") != "crowdless":
        raise ServiceError(400, f"method.type {method.get('type')!r} is not supported here: crowdless tunes "
                                "without labels (method.type 'crowdless')", "method.type")
    hyperparameters = (method.get("crowdless") or {}).get("hyperparameters") or {}
    if not isinstance(hyperparameters, dict):
        raise ServiceError(400, "method.crowdless.hyperparameters must be an object",
                           "method.crowdless.hyperparameters")
    for name, value in hyperparameters.items():
        if name not in HYPERPARAMETERS:
            raise ServiceError(400, f"unknown hyperparameter {name!r}; known: {', '.join(HYPERPARAMETERS)} "
                                    "(any other config key goes in extra_body={'config': {...}})",
                               f"method.crowdless.hyperparameters.{name}")
        if value != "auto":
            overrides.append(f"{HYPERPARAMETERS[name]}={json.dumps(value)}")
    for key, value in flat_keys(extra_config or {}).items():
        if any(key == reserved or (reserved.endswith(".") and key.startswith(reserved))
               for reserved in SERVICE_KEYS):
            raise ServiceError(400, f"config key {key} is set by the service, not by a job", f"config.{key}")
        overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def config_error_param(message: str) -> str | None:
    """The config key a ConfigError names first ('  policy.lr: ...'), for the error's param."""
    match = re.search(r"^\s+([a-z_]+(?:\.[a-z_0-9]+)+):", message, re.MULTILINE)
    return f"config.{match.group(1)}" if match else None


def model_name(base: str, suffix: str | None, job_id: str) -> str:
    """ft:<base>:<suffix>:<job id>, OpenAI's shape; the base without its embedded: prefix or path."""
    short = Path(base.removeprefix("embedded:")).name
    return f"ft:{short}:{suffix or 'crowdless'}:{job_id}"


# ---- the service -----------------------------------------------------------------------------
def _one_at_a_time(method):
    """Requests and the follow loop run in threads: one of them at a time changes the jobs."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._jobs_lock:
            return method(self, *args, **kwargs)
    return locked


class TuningService:
    """Files and jobs of one server. client_factory() gives a Ray JobSubmissionClient (or anything
    with its submit_job / get_job_status / stop_job); cluster_resources() Ray's totals."""

    def __init__(self, config: CrowdlessConfig, config_path: str | None, server_overrides: list[str],
                 client_factory: Callable, cluster_resources: Callable[[], dict], reserved_cpus: float = 0.0):
        self.config, self.server_overrides = config, list(server_overrides)
        self.config_path = str(resolve_config_path(config_path or "default").resolve())
        self.root = state_dir(config)
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self.store = Store(self.root / "crowdless.db")
        self._client_factory, self._client = client_factory, None
        self.cluster_resources, self.reserved_cpus = cluster_resources, reserved_cpus
        self._jobs_lock = threading.RLock()

    @property
    def client(self):
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # ---- files -------------------------------------------------------------------------------
    def create_file(self, filename: str, data: bytes, purpose: str) -> dict:
        if purpose != "fine-tune":
            raise ServiceError(400, f"purpose {purpose!r} is not supported; files here are prompts for "
                                    "purpose 'fine-tune'", "purpose")
        rows = prompt_rows(data, self.config.service.max_file_bytes)
        ident = f"file-{uuid.uuid4().hex[:24]}"
        path = self.root / "files" / f"{ident}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        now = time.time()
        return public(self.store.put("files", {"id": ident, "object": "file", "bytes": len(data), "_created": now,
                                        "created_at": int(now), "filename": filename,
                                        "purpose": purpose, "status": "processed", "prompts": len(rows)}))

    def get_file(self, ident: str, param: str = "file_id") -> dict:
        record = self.store.get("files", ident)
        if record is None:
            raise ServiceError(404, f"no file {ident!r}", param, "file_not_found")
        return public(record)

    def list_files(self) -> list[dict]:
        return [public(record) for record in self.store.list("files")]

    def delete_file(self, ident: str) -> dict:
        self.get_file(ident)
        (self.root / "files" / f"{ident}.jsonl").unlink(missing_ok=True)
        self.store.delete("files", ident)
        return {"id": ident, "object": "file", "deleted": True}

    # ---- jobs ---------------------------------------------------------------------------------
    def tunable_models(self) -> list[str]:
        from crowdless.models.loading import EMBEDDED_MODELS

        embedded = [f"embedded:{name}" for name in EMBEDDED_MODELS if name != "all-minilm-l6-v2"]
        return list(dict.fromkeys([self.config.model.policy, *embedded, *self.config.service.tunable_models]))

    @_one_at_a_time
    def create_job(self, request: dict) -> dict:
        """Check everything (model, files, hyperparameters, the whole config, the cluster's room)
        before anything starts; the job is then queued and starts when a slot is free."""
        model = request.get("model")
        if model not in self.tunable_models():
            raise ServiceError(400, f"model {model!r} cannot be tuned here; tunable: "
                                    f"{', '.join(self.tunable_models())}", "model", "model_not_found")
        training = self.get_file(request.get("training_file") or "", "training_file")
        validation = request.get("validation_file")
        if validation is not None:
            self.get_file(validation, "validation_file")
        extra = (request.get("extra_body") or {}).get("config") or request.get("config")
        if extra is not None and not isinstance(extra, dict):
            raise ServiceError(400, "config must be an object of config keys", "config")
        overrides = job_overrides(request.get("method"), extra)
        ident = f"ftjob-{uuid.uuid4().hex[:24]}"
        run_dir = self.root / "jobs" / ident
        service = [f"run.dir={run_dir}", f"model.policy={model}",
                   f"data.source={self.root / 'files' / (training['id'] + '.jsonl')}"]
        if validation is not None:
            service.append(f"data.eval_source={self.root / 'files' / (validation + '.jsonl')}")
        if request.get("seed") is not None:
            service.append(f"run.seed={int(request['seed'])}")
        job_overrides_all = [*self.server_overrides, *service, *overrides]
        try:
            config = load_config(self.config_path, job_overrides_all)
        except ConfigError as error:
            raise ServiceError(400, str(error), config_error_param(str(error))) from None
        self._check_room(config)
        suffix = request.get("suffix")
        created = time.time()
        now = int(created)
        record = {
            "id": ident, "object": "fine_tuning.job", "created_at": now, "_created": created, "finished_at": None, "model": model,
            "fine_tuned_model": None, "organization_id": "crowdless", "status": "queued",
            "training_file": training["id"], "validation_file": validation, "result_files": [],
            "hyperparameters": {"n_iterations": config.run.iterations, "objective": config.policy.objective,
                                "learning_rate": config.policy.lr, "kl_coef": config.policy.kl_coef,
                                "batch_size": config.policy.minibatch_size, "n_epochs": config.policy.epochs},
            "method": request.get("method") or {"type": "crowdless"}, "seed": config.run.seed, "suffix": suffix,
            "trained_tokens": None, "error": None, "estimated_finish": None, "integrations": [],
            "_model_name": model_name(model, suffix, ident), "_run_dir": str(run_dir),
            "_overrides": job_overrides_all, "_submitted": False, "_started_at": None,
            "_events": [_event(now, "info", "Validated the training file and the job's settings.")],
        }
        self.store.put("jobs", record)
        self.refresh()
        return self.get_job(ident)

    def _check_room(self, config: CrowdlessConfig) -> None:
        from cluster.resources import check_resources

        total = dict(self.cluster_resources())
        total["CPU"] = total.get("CPU", 0.0) - self.reserved_cpus  # the Serve app keeps its own share
        try:
            check_resources(config, total)
        except ConfigError as error:
            raise ServiceError(400, f"this job cannot run on this cluster: {error}", "config") from None

    def get_job(self, ident: str) -> dict:
        record = self._record(ident)
        return public(record)

    def _record(self, ident: str) -> dict:
        record = self.store.get("jobs", ident)
        if record is None:
            raise ServiceError(404, f"no fine-tuning job {ident!r}", "fine_tuning_job_id", "job_not_found")
        return record

    def list_jobs(self, after: str | None = None, limit: int = 20) -> dict:
        jobs = self.store.list("jobs")
        if after is not None:
            ids = [job["id"] for job in jobs]
            if after not in ids:
                raise ServiceError(400, f"after: no fine-tuning job {after!r}", "after")
            jobs = jobs[ids.index(after) + 1:]
        page = jobs[:limit]
        return {"object": "list", "data": [public(job) for job in page], "has_more": len(jobs) > limit}

    @_one_at_a_time
    def cancel_job(self, ident: str) -> dict:
        record = self._record(ident)
        if record["status"] not in ACTIVE:
            raise ServiceError(400, f"job {ident} is {record['status']}: only a queued or running job can be "
                                    "cancelled", "fine_tuning_job_id")
        if record["_submitted"]:
            self.client.stop_job(ident)  # Ray stops the driver, which stops its workers
        self._finish(record, "cancelled", "Job cancelled; its last complete checkpoint is kept.")
        self.refresh()
        return public(record)

    def _finish(self, record: dict, status: str, message: str, error: dict | None = None) -> None:
        now = int(time.time())
        record.update(status=status, finished_at=now, error=error)
        metrics = _metrics(Path(record["_run_dir"]))
        record["trained_tokens"] = sum(line.get("response_tokens") or 0 for line in metrics) or None
        if status == "succeeded":
            record["fine_tuned_model"] = record["_model_name"]
        record["_events"].append(_event(now, "error" if status == "failed" else "info", message))
        self.store.put("jobs", record)

    @_one_at_a_time
    def refresh(self) -> None:
        """Follow the Ray jobs of active records, then start queued ones while slots are free."""
        records = self.store.list("jobs")
        for record in records:
            if record["status"] in ACTIVE and record["_submitted"]:
                self._follow(record)
        running = sum(r["status"] in ACTIVE and r["_submitted"] for r in self.store.list("jobs"))
        for record in sorted(records, key=lambda r: r["_created"]):
            if running >= self.config.service.max_concurrent_jobs:
                break
            record = self._record(record["id"])
            if record["status"] == "queued" and not record["_submitted"]:
                try:
                    self._submit(record)
                except Exception as error:
                    # e.g. "No available agent to submit job" while a node's agent starts: the job
                    # stays queued, and the next refresh (serve.poll_seconds) submits it
                    print(f"[crowdless.serve] {record['id']} stays queued: the Ray job API refused it: {error}",
                          flush=True)
                    break
                running += 1

    def _submit(self, record: dict) -> None:
        command = [sys.executable, str(ROOT / "jobs" / "train.py"), "--config", self.config_path,
                   "--run-dir", record["_run_dir"], *record["_overrides"]]
        passed = {key: value for key, value in os.environ.items()
                  if key in ("HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "CROWDLESS_LOG_DIR")}
        try:
            self.client.submit_job(entrypoint=shlex.join(command), submission_id=record["id"],
                                   runtime_env={"env_vars": passed}, metadata={"crowdless_job": record["id"]})
        except Exception:
            if not self._ray_knows(record["id"]):  # else another replica of this app submitted it first
                raise
        record["_submitted"] = True
        record["_started_at"] = time.time()
        record["_events"].append(_event(int(time.time()), "info", "Job submitted to the Ray cluster."))
        self.store.put("jobs", record)

    def _ray_knows(self, ident: str) -> bool:
        try:
            self.client.get_job_status(ident)
            return True
        except Exception:
            return False

    def _follow(self, record: dict) -> None:
        try:
            status = RAY_STATUS[str(self.client.get_job_status(record["id"]))]
        except Exception as error:
            if "does not exist" not in str(error):
                raise  # the job API did not answer: ask again on the next refresh
            # the Ray job is gone: a new cluster under a kept state directory
            self._finish(record, "failed", "The Ray job of this fine-tuning job is gone.",
                         {"code": "job_lost", "message": f"the Ray job is gone: {error}", "param": None})
            return
        if status == "running" and record["status"] == "queued":
            record["status"] = "running"
            record["_events"].append(_event(int(time.time()), "info", "Job started."))
            self.store.put("jobs", record)
        elif status in ("succeeded", "failed", "cancelled"):
            message = {"succeeded": "The job has successfully completed.",
                       "failed": "The job failed; its run directory's logs have the traceback.",
                       "cancelled": "The Ray job was stopped."}[status]
            error = None
            if status == "failed":
                error = {"code": "training_failed", "param": None, "message": _driver_error(record)}
            self._finish(record, status, message, error)
        elif status == "running" and time.time() - (record["_started_at"] or time.time()) > \
                self.config.service.job_timeout_s:
            self.client.stop_job(record["id"])
            self._finish(record, "failed", "The job ran past service.job_timeout_s and was stopped.",
                         {"code": "timeout", "param": None,
                          "message": f"ran longer than {self.config.service.job_timeout_s:g} s"})

    def events(self, ident: str, after: str | None = None, limit: int = 20) -> dict:
        """Newest first: the job's status events, each phase's start and each iteration's metrics."""
        record = self._record(ident)
        run_dir = Path(record["_run_dir"])
        events = list(record["_events"])
        total = record["hyperparameters"]["n_iterations"]
        for line in _jsonl(run_dir / "events.jsonl"):
            events.append(_event(line["time"], "info", f"Iteration {line['iteration']}/{total}: {line['phase']}.",
                                 {"iteration": line["iteration"], "phase": line["phase"]}))
        mtime = (run_dir / "metrics.jsonl").stat().st_mtime if (run_dir / "metrics.jsonl").exists() else 0
        for line in _metrics(run_dir):
            data = {k: v for k, v in line.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            done = f"Iteration {line['iteration']}/{total} done." if line["iteration"] else "Starting model judged."
            events.append(_event(line.get("time", mtime), "info", done, data, kind="metrics"))
        for number, event in enumerate(sorted(events, key=lambda e: e["created_at"])):
            event["id"] = f"ftevent-{ident.removeprefix('ftjob-')}-{number}"
        events.sort(key=lambda e: (e["created_at"], e["id"]), reverse=True)
        if after is not None:
            ids = [e["id"] for e in events]
            events = events[ids.index(after) + 1:] if after in ids else []
        return {"object": "list", "data": events[:limit], "has_more": len(events) > limit}

    def checkpoints(self, ident: str, after: str | None = None, limit: int = 10) -> dict:
        record = self._record(ident)
        run_dir = Path(record["_run_dir"])
        by_iteration = {line["iteration"]: line for line in _metrics(run_dir)}
        found = []
        for folder in (run_dir / "checkpoints").glob("iter-*"):
            if not (folder / "state.json").exists():
                continue  # an incomplete checkpoint of a stopped run
            step = int(folder.name.removeprefix("iter-"))
            line = by_iteration.get(step, {})
            found.append({
                "id": f"ftckpt-{ident.removeprefix('ftjob-')}-{step}", "object": "fine_tuning.job.checkpoint",
                "created_at": int((folder / "state.json").stat().st_mtime), "fine_tuning_job_id": ident,
                "fine_tuned_model_checkpoint": f"{record['_model_name']}:ckpt-step-{step}", "step_number": step,
                "metrics": {"step": step, **{k: v for k, v in line.items()
                                             if k.startswith("eval_") and isinstance(v, (int, float))}},
            })
        found.sort(key=lambda c: c["step_number"], reverse=True)
        if after is not None:
            ids = [c["id"] for c in found]
            found = found[ids.index(after) + 1:] if after in ids else []
        return {"object": "list", "data": found[:limit], "has_more": len(found) > limit}

    # ---- serving the results ------------------------------------------------------------------
    def served_models(self) -> list[dict]:
        return [{"id": job["fine_tuned_model"], "object": "model", "created": job["finished_at"],
                 "owned_by": "crowdless", "root": job["model"], "fine_tuning_job_id": job["id"]}
                for job in self.store.list("jobs") if job["status"] == "succeeded"]

    def policy_for(self, name: str) -> str | None:
        """The policy folder a fine-tuned model name (or one of its checkpoints') stands for."""
        match = re.fullmatch(r"ft:[^:]*:[^:]*:(ftjob-[0-9a-f]+)(?::ckpt-step-(\d+))?", name)
        if not match:
            return None
        record = self.store.get("jobs", match.group(1))
        if record is None or record["_model_name"] != name.split(":ckpt-step-")[0]:
            return None
        run_dir = Path(record["_run_dir"])
        if match.group(2) is not None:
            folder = run_dir / "checkpoints" / f"iter-{match.group(2)}"
            return str(folder / "policy") if (folder / "state.json").exists() else None
        if record["status"] != "succeeded":
            return None
        return str((run_dir / "checkpoints" / "latest").resolve() / "policy")


def public(record: dict) -> dict:
    return {key: value for key, value in record.items() if not key.startswith("_")}


def _event(created_at: float, level: str, message: str, data: dict | None = None, kind: str = "message") -> dict:
    return {"object": "fine_tuning.job.event", "created_at": int(created_at), "level": level,
            "message": message, "data": data or {}, "type": kind}


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metrics(run_dir: Path) -> list[dict]:
    return _jsonl(run_dir / "metrics.jsonl")


def _driver_error(record: dict) -> str:
    """The driver's own error line (logs/driver-error.log), else a pointer to the run's logs."""
    log = Path(record["_run_dir"]) / "logs" / "driver-error.log"
    if log.exists():
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][-500:]
    return "the training job failed; see the Ray job's logs"
