"""vLLM engine arguments and the sampler plugin vLLM loads in its processes."""
