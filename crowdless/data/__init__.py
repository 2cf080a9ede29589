"""Prompt sets: the loaders (embedded, JSONL, Hugging Face), the split by prompt, and the records a run passes between workers."""
