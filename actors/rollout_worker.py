"""RolloutWorker: samples n answers per prompt with vLLM (or transformers generate as a fallback).

A plain class: cluster/ wraps it with ray.remote and resources from the config,
and tests build it directly.
"""

from __future__ import annotations

import os
import time

import torch

from actors import node_id, start_worker_process
from cluster.weight_sync import PortableState, remove_weights_file, torch_state, write_weights_file
from configs.schema import ModelConfig, RolloutConfig
from crowdless.models.loading import resolve_dtype
from crowdless.models.prompts import encode_prompt, prompt_seed
from crowdless.data.records import Rollout


class RolloutWorker:
    def __init__(self, model_path: str, model: ModelConfig, rollout: RolloutConfig, seed: int):
        from transformers import AutoTokenizer

        self.model_config, self.config, self.seed = model, rollout, seed
        start_worker_process("rollout")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tied_embeddings = False
        if rollout.backend == "vllm":
            self._start_vllm(model_path)
        else:
            self._start_transformers(model_path)

    # ---- engines -------------------------------------------------------------------------
    def _start_vllm(self, model_path: str) -> None:
        from transformers import AutoConfig
        from vllm import LLM

        from crowdless.engines.vllm_args import vllm_engine_args

        self.tied_embeddings = bool(AutoConfig.from_pretrained(model_path).tie_word_embeddings)
        if not torch.cuda.is_available():
            # vLLM's CPU backend keeps a core for its scheduler process and decodes on the rest: one
            # core of two. The scheduler mostly waits on the model, and an iteration's phases run one
            # after another, so decoding takes every core (bench_rollout: 1.76x on 2 cores). A value
            # the user set stays.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # One engine may get the whole iteration (after a scale-down): size it for that.
        sequences = self.config.prompts_per_iteration * self.config.samples_per_prompt
        self.engine = LLM(**vllm_engine_args(model_path, self.model_config, self.config, self.seed, sequences))

    def _start_transformers(self, model_path: str) -> None:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.seed)
        dtype = getattr(torch, resolve_dtype(self.model_config.dtype))
        self.engine = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).eval()

    def ready(self) -> str:
        return node_id()

    # ---- sampling ------------------------------------------------------------------------
    def generate(self, prompts: list[str], n: int | None = None, greedy: bool = False,
                 max_new_tokens: int | None = None, seed: int | None = None) -> list[list[Rollout]]:
        """n answers for each prompt (default rollout.samples_per_prompt), in prompt order: sampled
        at rollout.temperature / top_p, or the one greedy answer (evaluation). With a seed, each
        prompt's answers are drawn from a generator seeded by (seed, prompt): the same weights give
        the same answers however the prompts are spread over workers, so variants of a run and a
        resumed run sample what the uninterrupted one did (vLLM; the fallback seeds per call)."""
        encoded = [
            encode_prompt(self.tokenizer, p, self.model_config.use_chat_template,
                          self.model_config.max_prompt_tokens)
            for p in prompts
        ]
        sampling = {"n": 1 if greedy else (n or self.config.samples_per_prompt), "greedy": greedy,
                    "max_new_tokens": max_new_tokens or self.config.max_new_tokens,
                    "seeds": None if seed is None else [prompt_seed(seed, p) for p in prompts]}
        if self.config.backend == "vllm":
            samples = self._generate_vllm(encoded, **sampling)
        else:
            samples = self._generate_transformers(encoded, **sampling)
        return [
            [
                Rollout(prompt, ids, response, self.tokenizer.decode(response, skip_special_tokens=True),
                        logprobs, finished)
                for response, logprobs, finished in per_prompt
            ]
            for prompt, ids, per_prompt in zip(prompts, encoded, samples)
        ]

    def _generate_vllm(self, encoded: list[list[int]], n: int, greedy: bool, max_new_tokens: int,
                       seeds: list[int] | None):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=n,
                temperature=0.0 if greedy else self.config.temperature,
                top_p=1.0 if greedy else self.config.top_p,
                max_tokens=max_new_tokens,
                logprobs=0,  # the sampled token's log-prob only
                seed=None if seeds is None else seeds[i],  # vLLM seeds the n answers seed, seed+1, ...
            )
            for i in range(len(encoded))
        ]
        outputs = self.engine.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in encoded], params, use_tqdm=False
        )
        return [
            [
                (
                    list(sample.token_ids),
                    [step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)],
                    sample.finish_reason == "stop",
                )
                for sample in output.outputs
            ]
            for output in outputs
        ]

    @torch.no_grad()
    def _generate_transformers(self, encoded: list[list[int]], n: int, greedy: bool, max_new_tokens: int,
                               seeds: list[int] | None):
        if seeds is not None:  # one batched generate call: one seed for all of its prompts
            torch.manual_seed(seeds[0])
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        width = max(map(len, encoded))
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        out = self.engine.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=not greedy,
            temperature=None if greedy else self.config.temperature,
            top_p=None if greedy else self.config.top_p,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_logits=True,  # raw logits, as vLLM's default logprobs
        )
        generated = out.sequences[:, width:]
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)
        token_logprobs = logprobs.gather(-1, generated.unsqueeze(-1)).squeeze(-1)
        samples = []
        for row in range(len(generated)):
            tokens = generated[row].tolist()
            finished = eos in tokens
            length = tokens.index(eos) + 1 if finished else len(tokens)
            samples.append((tokens[:length], token_logprobs[row, :length].tolist(), finished))
        return [samples[i * n : (i + 1) * n] for i in range(len(encoded))]

    # ---- weights -------------------------------------------------------------------------
    def load_weights(self, state_dict: dict[str, torch.Tensor] | PortableState) -> float:
        """Serve new policy weights from the next request on; returns the seconds it took."""
        start = time.perf_counter()
        state_dict = torch_state(state_dict)
        if self.config.backend == "vllm":
            path = write_weights_file(state_dict, self.tied_embeddings)
            try:
                self.engine.collective_rpc("reload_weights_from_file", args=(str(path),))
            finally:
                remove_weights_file(path)
        else:
            self.engine.load_state_dict(state_dict, strict=False)
            self.engine.tie_weights()
        return time.perf_counter() - start
