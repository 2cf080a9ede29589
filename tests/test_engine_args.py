"""vLLM engine arguments: absolute KV cache bytes on CPU, the utilisation share on GPU only."""

import pytest

from configs.schema import ConfigError, load_config
from crowdless.engines import vllm_args as engine_args
from crowdless.engines.vllm_args import GIB, KV_HEADROOM, check_kv_cache_fits, vllm_engine_args

pytestmark = pytest.mark.unit


@pytest.fixture()
def config():
    return load_config("tiny")


def _bytes_per_token(model_dir):
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4  # K and V, fp32


def test_cpu_gets_absolute_kv_bytes_derived_from_the_work(config, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(engine_args, "node_available_bytes", lambda node=0: 64 * GIB)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    args = vllm_engine_args(tiny_model_dir, config.model, config.rollout, seed=3, sequences=16, on_gpu=False)
    assert "gpu_memory_utilization" not in args
    # tiny-llama: 2 layers x 2 kv heads x head size 64 x K,V x 4 bytes = 2048 bytes per token
    assert _bytes_per_token(tiny_model_dir) == 2048
    expected = 16 * config.rollout.max_model_len * 2048 * KV_HEADROOM
    assert args["kv_cache_memory_bytes"] == pytest.approx(expected, abs=1)
    assert args["max_num_seqs"] == 16 and args["seed"] == 3 and args["max_model_len"] == 512


def test_cpu_explicit_size_wins(config, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(engine_args, "node_available_bytes", lambda node=0: 64 * GIB)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    rollout = config.rollout.model_copy(update={"kv_cache_gib": 0.5})
    args = vllm_engine_args(tiny_model_dir, config.model, rollout, seed=0, sequences=16, on_gpu=False)
    assert args["kv_cache_memory_bytes"] == GIB // 2


def test_gpu_keeps_the_utilisation_share(config, tiny_model_dir):
    args = vllm_engine_args(tiny_model_dir, config.model, config.rollout, seed=0, sequences=16, on_gpu=True)
    assert args["gpu_memory_utilization"] == config.rollout.memory_utilization
    assert "kv_cache_memory_bytes" not in args


def test_too_big_names_the_key_and_both_sizes(config, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(engine_args, "node_available_bytes", lambda node=0: GIB // 4)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    rollout = config.rollout.model_copy(update={"kv_cache_gib": 2.0})
    with pytest.raises(ConfigError, match=r"rollout\.kv_cache_gib: .* needs 2\.00 GiB .* has 0\.25 GiB available"):
        vllm_engine_args(tiny_model_dir, config.model, rollout, seed=0, sequences=16, on_gpu=False)
    check_kv_cache_fits(GIB, 2 * GIB)  # fits: no error


def test_vllm_env_override_is_refused(config, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    with pytest.raises(ConfigError, match="VLLM_CPU_KVCACHE_SPACE"):
        vllm_engine_args(tiny_model_dir, config.model, config.rollout, seed=0, sequences=4, on_gpu=False)


def test_node_memory_is_read_in_bytes():
    available = engine_args.node_available_bytes()
    assert 0 < available < 2**50


def test_weights_file_falls_back_when_shm_is_small(monkeypatch, tmp_path):
    import shutil
    import torch

    from cluster import weight_sync

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(64, 64, 10))
    monkeypatch.setattr(weight_sync.tempfile, "gettempdir", lambda: str(tmp_path))
    path = weight_sync.write_weights_file({"w": torch.ones(100)}, tied_embeddings=False)
    assert path.parent.parent == tmp_path and path.exists()
    weight_sync.remove_weights_file(path)
    assert not path.parent.exists()


def test_portable_state_round_trips_and_travels_as_raw_buffers():
    """Weights go from learner to rollout workers as numpy arrays: pickled (as Ray's object store
    does, protocol 5) they leave their data out of band, as buffers the reader maps instead of
    unpickling copies; and they come back as the very tensors, bf16 included."""
    import pickle

    import torch

    from cluster import weight_sync

    state = {"embed": torch.randn(256, 64).to(torch.bfloat16), "norm": torch.rand(64),
             "half": torch.randn(8, 8).half(), "steps": torch.arange(5)}
    portable = weight_sync.portable_state(state)
    buffers = []
    payload = pickle.dumps(portable, protocol=5, buffer_callback=buffers.append)
    assert len(payload) < 2000 and sum(buffer.raw().nbytes for buffer in buffers) >= 256 * 64 * 2
    received = pickle.loads(payload, buffers=[buffer.raw().toreadonly() for buffer in buffers])
    restored = weight_sync.torch_state(received)
    assert restored.keys() == state.keys()
    for name, tensor in state.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor)
    assert weight_sync.torch_state(state) == state  # a plain state dict passes through
