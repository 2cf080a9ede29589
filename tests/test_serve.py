"""The real Serve app on loopback (Ray Serve + vLLM, tiny model), called with the official openai client."""

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
API_KEY = "test-key"


def _make_run(run_dir: Path, model_dir: str, iteration: int, perturb: bool = False):
    """A run directory with one checkpoint (policy + reward model) as the training job writes it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from cluster.run_dir import checkpoint_dir, mark_complete

    folder = checkpoint_dir(run_dir, iteration)
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    if perturb:  # a visibly different policy (seeded, so the test is deterministic)
        generator = torch.Generator().manual_seed(iteration)
        with torch.no_grad():
            for parameter in policy.parameters():
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    policy.save_pretrained(folder / "policy")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.save_pretrained(folder / "policy")
    reward = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1,
                                                                pad_token_id=tokenizer.pad_token_id)
    reward.save_pretrained(folder / "reward_model")
    tokenizer.save_pretrained(folder / "reward_model")
    (run_dir / "config.yaml").write_text("{}\n")
    mark_complete(run_dir, iteration, {})


def _request(method, path, body=None, key=API_KEY, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(BASE + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    import ray
    from ray import serve

    from serve.app import build_app

    run_dir = tmp_path_factory.mktemp("serve") / "run"
    _make_run(run_dir, tiny_model_dir, iteration=1)
    overrides = ["model.dtype=float32", f"serve.api_key={API_KEY}", "serve.max_tokens_limit=64",
                 "serve.max_n=4", "serve.poll_seconds=0.5", "rollout.max_model_len=256",
                 f"serve.state_dir={run_dir.parent / 'service'}"]
    owns_ray = not ray.is_initialized()  # a session fixture's Ray instance is not this module's to stop
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app({"model": str(run_dir), "config": "tiny", "overrides": overrides}),
              name="crowdless", route_prefix="/")
    yield run_dir
    serve.shutdown()
    if owns_ray:
        ray.shutdown()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{BASE}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def test_models_and_health(server, client):
    [model] = client.models.list().data
    assert model.id == "run" and model.root == "run"
    assert model.checkpoint == {"run": "run", "iteration": 1}
    status, listing = _request("GET", "/v1/models")
    assert status == 200 and str(server.parent) not in json.dumps(listing)  # no server path
    assert _request("GET", "/healthz", key=None) == (200, {"status": "ok", "model": "run", "iteration": 1})


def test_completion_chat_stream_and_n(client):
    completion = client.completions.create(model="run", prompt="The sky is", max_tokens=8, temperature=0.7)
    assert completion.object == "text_completion" and completion.choices[0].text
    assert 0 < completion.usage.completion_tokens <= 8

    chat = client.chat.completions.create(model="run", messages=[{"role": "user", "content": "Hi!"}],
                                          max_tokens=8, n=3, temperature=1.0)
    assert len(chat.choices) == 3 and {c.index for c in chat.choices} == {0, 1, 2}
    assert all(c.message.role == "assistant" and c.message.content for c in chat.choices)
    assert all(c.finish_reason in ("stop", "length") for c in chat.choices)

    stream = client.chat.completions.create(model="run", messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=8, stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3  # role chunk, content chunks, final chunk
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text and chunks[-1].choices[0].finish_reason in ("stop", "length")

    stopped = client.completions.create(model="run", prompt="a b c", max_tokens=16, stop=[" "], temperature=1.0)
    assert " " not in stopped.choices[0].text


def test_rewards_and_rank(server):
    status, body = _request("POST", "/v1/rewards", {"prompt": "What is 2+2?", "answers": ["4", "five", "fish"]})
    assert status == 200 and len(body["scores"]) == 3 and sorted(body["ranking"]) == [0, 1, 2]
    assert body["checkpoint_iteration"] == 1 and body["reward"] == "reward_model"
    answers = ["Paris is the capital.", "The capital is Paris.", "I like turtles.", "Paris."]
    status, body = _request("POST", "/v1/rank", {"prompt": "Capital of France?", "answers": answers})
    assert status == 200 and len(body["scores"]) == 4 and body["ranked_answers"]
    assert all(p["chosen"] != p["rejected"] for p in body["pairs"])


@pytest.mark.parametrize("path,body,status,param", [
    ("/v1/completions", {"model": "run"}, 400, "prompt"),
    ("/v1/completions", {"model": "run", "prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"model": "run", "prompt": "  "}, 400, "prompt"),
    ("/v1/completions", {"model": "nope", "prompt": "hi"}, 404, "model"),
    ("/v1/completions", {"model": "run", "prompt": "hi", "max_tokens": 10000}, 400, "max_tokens"),
    ("/v1/completions", {"model": "run", "prompt": "hi", "n": 50}, 400, "n"),
    ("/v1/completions", {"model": "run", "prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"model": "run", "prompt": "word " * 400}, 400, "prompt"),
    ("/v1/chat/completions", {"model": "run", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "run", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages.0.role"),
    ("/v1/rank", {"prompt": "q", "answers": "not a list"}, 400, "answers"),
    ("/v1/completions", {"model": "run", "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {"model": "run", "prompt": "hi", "stop": ["." * 5000]}, 400, "stop"),
    ("/v1/chat/completions", {"model": "run", "messages": [{"role": "user", "content": "x"}],
                              "stop": [str(i) for i in range(5000)]}, 400, "stop"),
    ("/v1/rank", {"prompt": "q", "answers": ["a"] * 65}, 400, "answers"),
    ("/v1/rewards", {"prompt": "q", "answers": ["a", "b" * 20000]}, 400, "answers.1"),
])
def test_bad_requests_name_the_field_and_server_keeps_serving(server, client, path, body, status, param):
    got_status, got = _request("POST", path, body)
    assert got_status == status, got
    assert got["error"]["param"] == param and got["error"]["message"]
    assert got["error"]["request_id"].startswith("req-")
    assert client.completions.create(model="run", prompt="still up", max_tokens=2).choices


def test_invalid_json_body_size_seed_and_api_key(server):
    status, body = _request("POST", "/v1/completions", raw=b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = _request("POST", "/v1/completions", raw=b"x" * 2_000_000)
    assert status == 413
    status, body = _request("POST", "/v1/completions", {"model": "run", "prompt": "hi", "seed": 3})
    assert status == 400 and body["error"]["param"] == "seed"
    status, body = _request("POST", "/v1/completions", {"model": "run", "prompt": "hi"}, key=None)
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, _ = _request("GET", "/v1/models", key="wrong")
    assert status == 401


def test_a_chunked_body_past_the_limit_gets_413_without_being_read_whole(server, client):
    """20 MB sent chunked (no Content-Length): the answer is 413 long before the upload could end."""
    import socket

    sock = socket.create_connection(("127.0.0.1", PORT), timeout=60)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + API_KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk, sent, answer = b"x" * 65536, 0, b""
    sock.settimeout(0.05)
    while sent < 20_000_000 and not answer:
        try:
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        except OSError:  # the server answered and closed: it stopped reading
            break
        try:
            answer = sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            pass
    sock.settimeout(60)
    while b"\r\n\r\n" not in answer:
        more = sock.recv(65536)
        if not more:
            break
        answer += more
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 20_000_000  # the server did not wait for the whole upload
    assert client.completions.create(model="run", prompt="still up", max_tokens=2).choices


def test_fifty_concurrent_requests(client):
    from openai import AsyncOpenAI

    async def run():
        async_client = AsyncOpenAI(base_url=f"{BASE}/v1", api_key=API_KEY, max_retries=0, timeout=300)
        calls = [async_client.completions.create(model="run", prompt=f"Count {i}:", max_tokens=6) for i in range(50)]
        return await asyncio.gather(*calls)

    results = asyncio.run(run())
    assert len(results) == 50 and all(r.choices[0].text is not None for r in results)


def test_hot_reload_switches_checkpoint_without_failed_requests(server, client, tiny_model_dir):
    failures, done = [], threading.Event()

    def keep_calling():
        while not done.is_set():
            try:
                client.completions.create(model="run", prompt="Keep going", max_tokens=4)
            except Exception as error:  # noqa: BLE001 - any failure during the switch counts
                failures.append(error)

    probe = {"model": "run", "prompt": "The", "max_tokens": 1, "temperature": 0.0}
    before = client.completions.create(**probe).choices[0].text
    caller = threading.Thread(target=keep_calling)
    caller.start()
    _make_run(server, tiny_model_dir, iteration=2, perturb=True)
    deadline = time.time() + 120
    while time.time() < deadline and client.models.list().data[0].checkpoint["iteration"] != 2:
        time.sleep(0.5)
    done.set()
    caller.join()
    assert client.models.list().data[0].checkpoint["iteration"] == 2
    assert failures == []
    after = client.completions.create(**probe).choices[0].text
    # greedy outputs now follow the new checkpoint's weights, which differ from the old ones'
    assert after == _greedy_first_token(server / "checkpoints" / "iter-2" / "policy")
    assert before == _greedy_first_token(server / "checkpoints" / "iter-1" / "policy")
    assert after != before


def _greedy_first_token(policy_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    ids = tokenizer("The", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        token = model(ids).logits[0, -1].argmax().item()
    return tokenizer.decode([token])


@pytest.mark.unit
def test_the_rewards_route_serves_the_implicit_reward_of_a_preference_run(tiny_model_dir, tmp_path):
    from types import SimpleNamespace

    from configs.schema import load_config
    from serve.app import CrowdlessServer, ModelSource

    load_reward = CrowdlessServer.func_or_class._load_reward
    source = ModelSource(tiny_model_dir, str(tmp_path / "no-reward-model"), tmp_path, 1)
    dpo = SimpleNamespace(config=load_config("tiny", ["policy.objective=dpo"]))
    scorer, kind = load_reward(dpo, source)
    assert kind == "implicit: beta * log(pi / pi_ref), beta 0.1 (dpo)"
    assert scorer.score(["Q"], ["A"]) == pytest.approx([0.0])  # the policy is its start here
    grpo = SimpleNamespace(config=load_config("tiny", ["policy.objective=grpo", "reward.source=ranker"]))
    scorer, why = load_reward(grpo, source)
    assert scorer is None and "trained no reward model and has no implicit reward" in why
    scorer, why = load_reward(dpo, ModelSource(tiny_model_dir, None, None, None))
    assert scorer is None and "start it on a run directory" in why
