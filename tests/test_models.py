import json
from pathlib import Path

import pytest

from crowdless.models.loading import ModelError, resolve_model

pytestmark = pytest.mark.unit


def test_tiny_llama_is_a_loadable_hf_folder(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 128
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.chat_template  # SmolLM2's template travels with the tokenizer
    assert resolve_model("embedded:tiny-llama") == tiny_model_dir  # cached, not rebuilt


def test_smollm2_is_converted_to_plain_weights():
    folder = Path(resolve_model("embedded:smollm2-135m-instruct"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["hidden_size"] == 576
    assert (folder / "model.safetensors").exists()


def test_embedding_model_is_packaged(embedder):
    vectors = embedder.encode(["a cat", "a kitten", "tax law"], normalize_embeddings=True)
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_local_paths_and_hub_ids(tmp_path):
    with pytest.raises(ModelError, match="unknown embedded model"):
        resolve_model("embedded:gpt-5")
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_auto_dtype_follows_the_hardware():
    import torch

    from crowdless.models.loading import resolve_dtype

    assert resolve_dtype("float32") == "float32" and resolve_dtype("bfloat16") == "bfloat16"
    native_bf16 = (torch.cuda.is_bf16_supported() if torch.cuda.is_available()
                   else torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_dtype("auto") == ("bfloat16" if native_bf16 else "float32")


def test_the_embedded_policy_is_the_gguf_files_weights(tmp_path):
    """Every tensor of the converted SmolLM2 comes from the packaged GGUF: the file's own
    dequantisation (gguf.quants), rounded to bf16, equals the saved weight bit for bit (q and k
    are stored permuted for RoPE in GGUF: their values are compared as multisets)."""
    import gguf
    import torch
    import numpy as np
    from safetensors.torch import load_file

    from crowdless.models.loading import _smollm2_gguf, resolve_model

    saved = load_file(str(Path(resolve_model("embedded:smollm2-135m-instruct")) / "model.safetensors"))
    names = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
    parts = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "ffn_down": "mlp.down_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj"}
    matched = set()
    for tensor in gguf.GGUFReader(_smollm2_gguf()).tensors:
        base = tensor.name.removesuffix(".weight")
        if base.startswith("blk."):
            _, layer, part = base.split(".")
            name = f"model.layers.{layer}.{parts[part]}.weight"
        else:
            name = f"{names[base]}.weight"
        values = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type)))
        expected = values.reshape(saved[name].shape).to(torch.bfloat16)
        if base.endswith(("attn_q", "attn_k")):
            assert torch.equal(expected.flatten().sort().values, saved[name].flatten().sort().values), name
        else:
            assert torch.equal(expected, saved[name]), name
        matched.add(name)
    assert matched == set(saved) - {"lm_head.weight"}  # the head is tied to the embeddings
