"""Models: resolving and loading them (GGUF included), LoRA, prompt and answer tokens, reward and likelihood forwards."""
