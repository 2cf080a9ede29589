"""The Ray Serve application: an OpenAI-style HTTP API over the tuned model, plus the reward
model and the label-free ranker as services, following a training run's checkpoints live.

    python -m serve --model runs/default            # serve a run's latest checkpoint
    serve run configs/serve.yaml                    # the same through Serve's config file

Routes: POST /v1/completions, POST /v1/chat/completions (stream: true -> server-sent events),
GET /v1/models, POST /v1/rewards, POST /v1/rank, GET /healthz; and the tuning service
(serve/tuning.py): POST/GET /v1/files, GET/DELETE /v1/files/{id}, POST/GET
/v1/fine_tuning/jobs, GET /v1/fine_tuning/jobs/{id}, POST .../{id}/cancel, GET .../{id}/events,
GET .../{id}/checkpoints. A succeeded job's fine_tuned_model (and each checkpoint's name) is
answered by the completion routes, loaded on first use through Serve's model multiplexing.

Every error answer is {"error": {"message", "type", "param", "code", "request_id"}}; an
unexpected failure answers 500 with its request id only, and its traceback goes to the server's
log under that id. The API key (serve.api_key or CROWDLESS_API_KEY) reaches replicas through
their environment, never through deployment arguments, and is compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from configs.schema import CrowdlessConfig, load_config, parse_override
from serve.schemas import AnswersRequest, ChatCompletionRequest, CompletionRequest, SamplingFields
from serve.tuning import ServiceError, TuningService, state_dir

app = FastAPI(title="crowdless")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code


API_KEY_ENV = "CROWDLESS_API_KEY"
UNION_MEMBER = re.compile(r"^(constrained-\w+|list\[.*\]|str|int|float|bool|none|function-\w+.*)$")


def request_id(request: Request) -> str:
    """One id per request, shared by its error answer and the server log."""
    if not hasattr(request.state, "request_id"):
        request.state.request_id = f"req-{uuid.uuid4().hex[:16]}"
    return request.state.request_id


def error_response(request: Request, status: int, message: str, param: str | None = None,
                   kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code,
                      "request_id": request_id(request)}}
    return JSONResponse(status_code=status, content=body)


@app.exception_handler(ApiError)
async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return error_response(request, error.status, error.message, error.param, error.kind, error.code)


@app.exception_handler(ServiceError)
async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
    return error_response(request, error.status, error.message, error.param, code=error.code)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return error_response(request, 400, "request body is not valid JSON")
    # pydantic names the member of a union it tried ("stop.list[constrained-str].0"): keep field names
    location = [str(part) for part in first["loc"] if part != "body" and not UNION_MEMBER.match(str(part))]
    param = ".".join(location) or None
    return error_response(request, 400, f"{param}: {first['msg']}" if param else first["msg"], param)


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # the traceback may name files and values: it goes to the server log only, under the request id
    print(f"[crowdless.serve] {request_id(request)} failed:\n{traceback.format_exc()}", flush=True)
    return error_response(request, 500, "internal server error; the server log has the details under "
                          "this request_id", kind="server_error")


@dataclass
class ModelSource:
    """What to serve: a run directory (its checkpoints/latest) or a model reference."""

    policy: str
    reward_model: str | None
    run_dir: Path | None
    iteration: int | None

    @classmethod
    def resolve(cls, model: str) -> ModelSource:
        from cluster.run_dir import latest_checkpoint
        from crowdless.models.loading import resolve_model

        run_dir = Path(model)
        if (run_dir / "checkpoints").is_dir() or (run_dir / "config.yaml").exists():
            latest = latest_checkpoint(run_dir)
            if latest is None:
                raise FileNotFoundError(f"{run_dir} has no complete checkpoint yet (checkpoints/latest)")
            iteration, folder = latest
            return cls(str(folder / "policy"), str(folder / "reward_model"), run_dir.resolve(), iteration)
        return cls(resolve_model(model), None, None, None)


# Defined before the deployment class: Serve serializes that class when it is decorated, with
# the module globals its methods name as they are at that moment.
def _job_client():
    """Ray's job API of the cluster this replica runs on (its GCS address names it)."""
    import ray
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(ray.get_runtime_context().gcs_address)


def ray_cluster_resources() -> dict:
    import ray

    return ray.cluster_resources()


@dataclass
class ServedModel:
    """A model the completion routes answer with: its engine and tokenizer."""

    engine: object
    tokenizer: object


class TunedModel(ServedModel):
    """A fine-tuned model's own engine, shut down when model multiplexing unloads it."""

    def __del__(self) -> None:  # Serve's model multiplexing calls this when it unloads the model
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()


@serve.deployment(name="crowdless", max_ongoing_requests=64)
@serve.ingress(app)
class CrowdlessServer:
    def __init__(self, model: str, config: str | None = "default", overrides: list[str] | None = None,
                 served_name: str | None = None):
        from transformers import AutoTokenizer

        from crowdless.ranking import load_embedder
        from serve.engine import start_engine

        self.config: CrowdlessConfig = load_config(config, overrides or [])
        self.source = ModelSource.resolve(model)
        self.name = served_name or (self.source.run_dir.name if self.source.run_dir else Path(model).name or model)
        key = self.config.serve.api_key
        self.api_key = (key.get_secret_value() if key is not None else None) or os.environ.get(API_KEY_ENV)
        self.tokenizer = AutoTokenizer.from_pretrained(self.source.policy)
        self.engine = start_engine(self.source.policy, self.config.model, self.config.rollout, self.config.run.seed,
                                   self.config.serve.max_num_seqs)
        self.embedder = load_embedder(self.config.model.embedding)
        self.reward, self.reward_kind = self._load_reward(self.source)
        self.loaded_at = time.time()
        self._watcher: asyncio.Task | None = None
        self._tuning_task: asyncio.Task | None = None
        self.tuning = TuningService(self.config, config, overrides or [], _job_client, ray_cluster_resources,
                                    reserved_cpus=self.config.serve.replica_cpus)
        self.swap_in_seconds: dict[str, float] = {}
        # fine-tuned models, loaded on first use, the least recently used unloaded past the limit
        async def load(name: str) -> TunedModel:  # a function: Serve keeps its model cache on it
            return await self._load_tuned_model(name)

        self._tuned_model = serve.multiplexed(max_num_models_per_replica=self.config.service.max_resident_models)(load)

    async def _load_tuned_model(self, name: str) -> ServedModel:
        from transformers import AutoTokenizer

        from serve.engine import start_engine

        path = await asyncio.to_thread(self.tuning.policy_for, name)
        started = time.perf_counter()
        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, path)
        engine = await asyncio.to_thread(start_engine, path, self.config.model, self.config.rollout,
                                         self.config.run.seed, self.config.serve.max_num_seqs)
        self.swap_in_seconds[name] = time.perf_counter() - started
        print(f"[crowdless.serve] loaded {name} in {self.swap_in_seconds[name]:.1f}s", flush=True)
        return TunedModel(engine, tokenizer)

    async def _model(self, name: str, param: str = "model") -> ServedModel:
        """The engine and tokenizer that answer under `name`: this server's model, or a fine-tuned one."""
        if name in (self.name, self.source.policy):
            return ServedModel(self.engine, self.tokenizer)
        if await asyncio.to_thread(self.tuning.policy_for, name) is None:
            raise ApiError(404, f"model {name!r} is not served here; GET /v1/models lists the models",
                           param, code="model_not_found")
        return await self._tuned_model(name)

    def _ensure_watcher(self) -> None:
        """Started from the replica's event loop (a request or Serve's health check), not __init__."""
        if self.source.run_dir and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.get_running_loop().create_task(self._follow_run())
        if self._tuning_task is None or self._tuning_task.done():
            self._tuning_task = asyncio.get_running_loop().create_task(self._follow_jobs())

    async def _follow_jobs(self) -> None:
        """Follow the tuning jobs' Ray jobs and start queued ones, also while nobody asks."""
        while True:
            try:
                await asyncio.to_thread(self.tuning.refresh)
            except Exception:
                print(f"[crowdless.serve] following tuning jobs failed:\n{traceback.format_exc()}", flush=True)
            await asyncio.sleep(self.config.serve.poll_seconds)

    async def check_health(self) -> None:  # Serve calls this every few seconds
        self._ensure_watcher()

    def __del__(self) -> None:  # Serve calls this when it stops a replica gracefully
        if getattr(self, "engine", None) is not None:
            self.engine.shutdown()

    # ---- live updates -----------------------------------------------------------------------
    def _load_reward(self, source: ModelSource):
        """(scorer, what it is) for /v1/rewards: the run's reward model where it trained one; for a
        dpo or listwise run, the policy's implicit reward against its starting model (the config's
        model.policy); else (None, why there is none)."""
        from crowdless.models.loading import resolve_dtype, resolve_model

        cfg = self.config
        if source.reward_model is not None and Path(source.reward_model).exists():
            from crowdless.models.reward import RewardScorer

            scorer = RewardScorer(source.reward_model, cfg.reward.max_length, cfg.model.use_chat_template,
                                  cfg.model.max_prompt_tokens)
            return scorer, "reward_model"
        if source.run_dir is None:
            return None, "this server serves a model, not a run: start it on a run directory"
        if cfg.reward_scorer != "implicit_reward":
            return None, (f"this run (policy.objective={cfg.policy.objective}, reward.source={cfg.reward.source}) "
                          "trained no reward model and has no implicit reward; POST /v1/rank ranks answers")
        import torch

        from crowdless.models.likelihood import ImplicitReward

        scorer = ImplicitReward(source.policy, resolve_model(cfg.model.policy), cfg.policy.beta,
                                getattr(torch, resolve_dtype(cfg.model.dtype)),
                                use_chat_template=cfg.model.use_chat_template,
                                max_prompt_tokens=cfg.model.max_prompt_tokens,
                                max_answer_tokens=cfg.rollout.max_new_tokens + 1)
        return scorer, f"implicit: beta * log(pi / pi_ref), beta {cfg.policy.beta:g} ({cfg.policy.objective})"

    async def _follow_run(self) -> None:
        """Poll the run's `latest`; switch weights in place (in-flight requests keep going)."""
        from cluster.run_dir import latest_checkpoint

        while True:
            await asyncio.sleep(self.config.serve.poll_seconds)
            try:
                latest = latest_checkpoint(self.source.run_dir)
                if latest and latest[0] != self.source.iteration:
                    await self._switch_to(*latest)
            except Exception as error:  # a half-written or broken checkpoint must not stop serving
                print(f"[crowdless.serve] could not load new checkpoint: {error}", flush=True)

    async def _switch_to(self, iteration: int, folder: Path) -> None:
        from safetensors.torch import load_file

        from cluster.weight_sync import remove_weights_file, write_weights_file

        state = await asyncio.to_thread(load_file, str(folder / "policy" / "model.safetensors"))
        path = await asyncio.to_thread(write_weights_file, state, self.engine.tied_embeddings)
        try:
            await self.engine.load_weights_file(str(path))
        finally:
            remove_weights_file(path)
        source = ModelSource(str(folder / "policy"), str(folder / "reward_model"), self.source.run_dir, iteration)
        self.reward, self.reward_kind = await asyncio.to_thread(self._load_reward, source)
        self.source = source
        self.loaded_at = time.time()
        print(f"[crowdless.serve] now serving {self.source.run_dir} iteration {iteration}", flush=True)

    # ---- request checks ---------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        self._ensure_watcher()
        sent = request.headers.get("authorization", "").encode()
        if self.api_key and not hmac.compare_digest(sent, f"Bearer {self.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)",
                           kind="authentication_error", code="invalid_api_key")

    async def _parse(self, request: Request, schema: type):
        self._authorize(request)
        limit = self.config.serve.max_body_bytes
        too_large = ApiError(413, f"request body over {limit} bytes (serve.max_body_bytes)")
        if int(request.headers.get("content-length") or 0) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():  # a chunked body has no length up front: count as it comes
            body += chunk
            if len(body) > limit:
                raise too_large
        try:
            data = json.loads(bytes(body))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"request body is not valid JSON: {error}") from None
        try:
            return schema.model_validate(data)
        except Exception as error:  # pydantic.ValidationError
            raise RequestValidationError(getattr(error, "errors", lambda: [])()) from None

    def _check_sampling(self, body: SamplingFields, prompt_ids: list[int], prompt_param: str, engine) -> None:
        limits = self.config.serve
        if body.max_tokens > limits.max_tokens_limit:
            raise ApiError(400, f"max_tokens {body.max_tokens} is over this server's limit {limits.max_tokens_limit}",
                           "max_tokens")
        if body.n > limits.max_n:
            raise ApiError(400, f"n {body.n} is over this server's limit {limits.max_n}", "n")
        if len(prompt_ids) + body.max_tokens > engine.max_model_len:
            raise ApiError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({body.max_tokens}) exceeds "
                           f"the context length {engine.max_model_len}", prompt_param)
        if body.seed is not None and not engine.supports_seed:
            raise ApiError(400, "seed is not supported by this engine (vLLM's CPU sampler cannot seed single "
                           "requests); omit it, or serve with rollout.backend=transformers", "seed")

    def _sampling_request(self, body: SamplingFields, prompt_ids: list[int]):
        from serve.engine import SamplingRequest

        return SamplingRequest(prompt_ids, body.n, body.max_tokens, body.temperature, body.top_p,
                               body.stop_list, body.seed)

    # ---- generation -------------------------------------------------------------------------
    async def _respond(self, body: SamplingFields, prompt_ids: list[int], chat: bool, engine):
        request = self._sampling_request(body, prompt_ids)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        if body.stream:
            return StreamingResponse(self._stream(request, ident, created, kind, body.model, chat, engine),
                                     media_type="text/event-stream")
        texts, reasons, tokens = [""] * body.n, [None] * body.n, [0] * body.n
        async for delta in engine.generate(request):
            texts[delta.index] += delta.text
            tokens[delta.index] = delta.tokens
            reasons[delta.index] = delta.finish_reason or reasons[delta.index]
        choices = [
            {"index": i, "finish_reason": reasons[i] or "length",
             **({"message": {"role": "assistant", "content": texts[i]}} if chat else {"text": texts[i], "logprobs": None})}
            for i in range(body.n)
        ]
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": sum(tokens),
                 "total_tokens": len(prompt_ids) + sum(tokens)}
        return {"id": ident, "object": kind, "created": created, "model": body.model,
                "choices": choices, "usage": usage}

    async def _stream(self, request, ident: str, created: int, kind: str, model: str, chat: bool, engine):
        chunk_kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choice: dict) -> str:
            return "data: " + json.dumps({"id": ident, "object": chunk_kind, "created": created,
                                          "model": model, "choices": [choice]}) + "\n\n"

        if chat:
            for index in range(request.n):
                yield event({"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        try:
            async for delta in engine.generate(request):
                content = {"delta": {"content": delta.text}} if chat else {"text": delta.text, "logprobs": None}
                yield event({"index": delta.index, **content, "finish_reason": delta.finish_reason})
        except Exception:  # the stream has started: report in-band, keep the server up
            ident_error = f"req-{uuid.uuid4().hex[:16]}"
            print(f"[crowdless.serve] {ident_error} failed mid-stream:\n{traceback.format_exc()}", flush=True)
            yield "data: " + json.dumps({"error": {"message": "generation failed; the server log has the details",
                                                   "type": "server_error", "request_id": ident_error}}) + "\n\n"
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        from crowdless.models.prompts import encode_prompt

        body = await self._parse(request, CompletionRequest)
        model = await self._model(body.model)
        prompt_ids = encode_prompt(model.tokenizer, body.prompt, use_chat_template=False, max_tokens=10**9)
        self._check_sampling(body, prompt_ids, "prompt", model.engine)
        return await self._respond(body, prompt_ids, chat=False, engine=model.engine)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        body = await self._parse(request, ChatCompletionRequest)
        model = await self._model(body.model)
        messages = [m.model_dump() for m in body.messages]
        if model.tokenizer.chat_template:
            encoded = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            prompt_ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        else:
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
            prompt_ids = model.tokenizer(text)["input_ids"]
        self._check_sampling(body, prompt_ids, "messages", model.engine)
        return await self._respond(body, prompt_ids, chat=True, engine=model.engine)

    # ---- models, rewards, ranking ---------------------------------------------------------
    @app.get("/v1/models")
    async def models(self, request: Request):
        self._authorize(request)
        checkpoint = None
        if self.source.run_dir:  # the run's name, never a path on this server
            checkpoint = {"run": self.source.run_dir.name, "iteration": self.source.iteration}
        tuned = await asyncio.to_thread(self.tuning.served_models)
        return {"object": "list", "data": [{
            "id": self.name, "object": "model", "created": int(self.loaded_at), "owned_by": "crowdless",
            "root": self.name, "checkpoint": checkpoint,
        }, *tuned]}

    @app.post("/v1/rewards")
    async def rewards(self, request: Request):
        body = await self._parse(request, AnswersRequest)
        if self.reward is None:
            raise ApiError(404, f"no reward to serve: {self.reward_kind}", code="reward_not_found")
        scores = await asyncio.to_thread(self.reward.score, [body.prompt] * len(body.answers), body.answers)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return {"object": "list", "prompt": body.prompt, "scores": scores, "ranking": order,
                "reward": self.reward_kind, "checkpoint_iteration": self.source.iteration}

    @app.post("/v1/rank")
    async def rank(self, request: Request):
        from crowdless.ranking import embed, rank_group

        body = await self._parse(request, AnswersRequest)

        def run():
            vectors = embed(self.embedder, body.answers)
            return rank_group(body.prompt, body.answers, vectors, self.config.ranking,
                              np.random.default_rng(self.config.run.seed))

        group = await asyncio.to_thread(run)
        return {"object": "ranking", **group.to_json()}

    # ---- the tuning service: files and fine-tuning jobs (serve/tuning.py) --------------------
    @app.post("/v1/files")
    async def create_file(self, request: Request):
        self._authorize(request)
        limit = self.config.service.max_file_bytes + 65536  # the multipart envelope around the file
        if int(request.headers.get("content-length") or 0) > limit:
            raise ApiError(413, f"upload over {self.config.service.max_file_bytes} bytes (service.max_file_bytes)")
        try:
            form = await request.form()
        except Exception as error:  # not multipart/form-data, or a broken body
            raise ApiError(400, f"expected a multipart/form-data body with 'file' and 'purpose': {error}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "missing the 'file' part (multipart/form-data)", "file")
        data = await upload.read()
        return await asyncio.to_thread(self.tuning.create_file, upload.filename or "upload.jsonl", data,
                                       str(form.get("purpose") or ""))

    @app.get("/v1/files")
    async def list_files(self, request: Request):
        self._authorize(request)
        return {"object": "list", "data": await asyncio.to_thread(self.tuning.list_files)}

    @app.get("/v1/files/{file_id}")
    async def get_file(self, file_id: str, request: Request):
        self._authorize(request)
        return await asyncio.to_thread(self.tuning.get_file, file_id)

    @app.delete("/v1/files/{file_id}")
    async def delete_file(self, file_id: str, request: Request):
        self._authorize(request)
        return await asyncio.to_thread(self.tuning.delete_file, file_id)

    async def _json(self, request: Request) -> dict:
        self._authorize(request)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"request body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(self, request: Request):
        body = await self._json(request)
        return await asyncio.to_thread(self.tuning.create_job, body)

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(self, request: Request, after: str | None = None, limit: int = 20):
        self._authorize(request)
        await asyncio.to_thread(self.tuning.refresh)
        return await asyncio.to_thread(self.tuning.list_jobs, after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def get_job(self, job_id: str, request: Request):
        self._authorize(request)
        await asyncio.to_thread(self.tuning.refresh)
        return await asyncio.to_thread(self.tuning.get_job, job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(self, job_id: str, request: Request):
        self._authorize(request)
        return await asyncio.to_thread(self.tuning.cancel_job, job_id)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def job_events(self, job_id: str, request: Request, after: str | None = None, limit: int = 20):
        self._authorize(request)
        return await asyncio.to_thread(self.tuning.events, job_id, after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def job_checkpoints(self, job_id: str, request: Request, after: str | None = None, limit: int = 10):
        self._authorize(request)
        return await asyncio.to_thread(self.tuning.checkpoints, job_id, after, limit)

    @app.get("/healthz")
    async def healthz(self):
        return {"status": "ok", "model": self.name, "iteration": self.source.iteration}


def build_app(args: dict, api_key: str | None = None) -> serve.Application:
    """Entry point for `serve run` / `serve deploy` (configs/serve.yaml): args model, config,
    overrides, served_name. Replicas, autoscaling and resources come from the Serve config.
    The API key (api_key, a serve.api_key override, the config's, or CROWDLESS_API_KEY) goes to
    the replicas in their environment: an override holding it is taken out of the deployment's
    arguments."""
    unknown = set(args) - {"model", "config", "overrides", "served_name"}
    if unknown or "model" not in args:
        raise ValueError(f"serve args need 'model' and accept config, overrides, served_name; got {sorted(args)}")
    overrides = list(args.get("overrides", []))
    config = load_config(args.get("config", "default"), overrides)
    public = [o for o in overrides if parse_override(o)[0] != ["serve", "api_key"]]
    # the service's state directory as the caller sees it: replicas may start in another folder
    public.append(f"serve.state_dir={state_dir(config)}")
    # the caller's CROWDLESS_API_KEY too: replicas on a cluster started elsewhere (`ray start`) do
    # not inherit the caller's environment, and would otherwise serve an open API
    key = api_key or (config.serve.api_key.get_secret_value() if config.serve.api_key else None) \
        or os.environ.get(API_KEY_ENV)
    options = {"num_cpus": config.serve.replica_cpus, "num_gpus": config.serve.replica_gpus}
    if key:
        options["runtime_env"] = {"env_vars": {API_KEY_ENV: key}}
    return CrowdlessServer.options(ray_actor_options=options).bind(
        args["model"], args.get("config", "default"), public, args.get("served_name"))


def start_app(model: str, config: str | None, overrides: list[str], host: str, port: int,
              served_name: str | None = None, api_key: str | None = None) -> None:
    """Run the app on Serve (detached: on a long-lived cluster it outlives the caller)."""
    serve.start(http_options={"host": host, "port": port})
    app_args = {"model": model, "config": config, "overrides": overrides, "served_name": served_name}
    serve.run(build_app(app_args, api_key), name="crowdless", route_prefix="/")
