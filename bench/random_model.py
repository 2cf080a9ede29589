"""A model folder with a known architecture and seeded random weights, for throughput figures
on machines the real weights cannot reach (the lent GPU machine has no network).

    python bench/random_model.py --shape qwen2.5-1.5b --tokenizer DIR --out DIR

Speed depends on the shapes, not on the weights' values; quality figures need the real model.
The tokenizer folder gives the tokenizer (its ids stay below either shape's vocabulary).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Published configurations (config.json on the hub) of the models the configs name.
SHAPES = {
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
                     "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
                     "rope_theta": 100000.0},
    "qwen2.5-1.5b": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
                     "rope_theta": 1000000.0},
}


def build(shape: str, tokenizer_dir: str, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  **fields)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialising 1.5B weights takes minutes on a CPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "random_weights.json").write_text(json.dumps({"shape": shape, "seed": seed}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--tokenizer", required=True, help="a model folder whose tokenizer to use")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    path = build(args.shape, args.tokenizer, args.out)
    print(f"wrote {path} ({args.shape}, random weights)")


if __name__ == "__main__":
    main()
