"""The one typed config tree. Every knob has a documented default; unknown keys are errors.

Load a YAML file and apply `key.sub=value` overrides with `load_config`. Any
mistake (unknown key, wrong type, bad value) raises ConfigError naming the full
key path before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from algos.pairs import DEFAULT_ISODATA

CONFIG_DIR = Path(__file__).resolve().parent


# What config.yaml and every other dump of a config hold in place of a secret.
SECRET_MARK = "***"


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    dir: str = Field("runs/default", description="Run directory: config, metrics, checkpoints.")
    seed: int = Field(0, description="Seeds data order, sampling, ranking, noise and init.")
    iterations: int = Field(2, ge=1, description="Rollout-rank-train iterations.")
    stop_at_drift: float | None = Field(
        None, gt=0, description="End the run early once the policy has drifted this far from its start: "
        "policy_drift (its KL to the start on the answers it just sampled, nats per answer) measured at "
        "an iteration's policy phase, before it trains. That policy, the previous iteration's, is the run's "
        "last: judged, served and resumed from. None: every iteration trains (docs/experiments.md E28)."
    )
    log_tensorboard: bool = Field(True, description="Also write TensorBoard events.")


class ModelConfig(Section):
    policy: str = Field(
        "embedded:smollm2-135m-instruct",
        description="Model to tune: embedded:NAME, a local HF folder, or a hub id.",
    )
    reward_backbone: str | None = Field(
        None, description="Reward model backbone; None uses the policy's."
    )
    embedding: str = Field(
        "embedded:all-minilm-l6-v2", description="Sentence-transformers model for ranking."
    )
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="Weights dtype for rollouts and training (no fp16 on CPU). auto: bfloat16 on "
        "a GPU or a CPU with native bf16 matmuls (AVX512-BF16 / AMX), else float32 (bf16 is then ~80x slower). "
        "A short run at a small learning rate wants float32: a step smaller than half a bf16 rounding step "
        "leaves the bf16 weight where it was (the learner keeps float32 master copies, but the forward "
        "passes, vLLM and the saved policy see the rounded weights)."
    )
    use_chat_template: bool = Field(True, description="Apply the tokenizer's chat template.")
    max_prompt_tokens: int = Field(256, ge=8, description="Longer prompts are truncated (left).")


class DataConfig(Section):
    source: str = Field(
        "embedded:chatterbot",
        description="embedded:chatterbot[/category,...], embedded:chitchat, dailydialog:PATH, "
        "cornell:PATH, squad:PATH, a .jsonl/.json/.csv/.parquet file, or a hub dataset name.",
    )
    prompt_field: str = Field("prompt", description="Field holding the prompt text.")
    reference_field: str | None = Field(
        "reference", description="Optional field with a reference answer (evaluation only)."
    )
    split: str = Field("train", description="Split to read from a hub dataset.")
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Held out for evaluation.")
    eval_source: str | None = Field(
        None, description="Held-out prompts with references from a source of their own (any data.source "
        "spelling); every prompt of data.source then trains, but those also in eval_source. null: "
        "data.eval_fraction of data.source's prompts are held out.")
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts.")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="A malformed row stops loading, or is skipped and counted."
    )


class RolloutConfig(Section):
    backend: Literal["vllm", "transformers"] = Field(
        "vllm", description="Sampling engine; transformers generate is the fallback."
    )
    num_workers: int = Field(1, ge=1, description="RolloutWorker replicas.")
    chunks_per_worker: int = Field(
        2, ge=1, description="With several rollout workers, each iteration's prompts are cut into this "
        "many chunks per worker and idle workers pull the next chunk (a slow worker takes fewer); more "
        "chunks balance better, fewer keep each engine's batch large. One worker takes all prompts at once.")
    prompts_per_iteration: int = Field(8, ge=1, description="Prompts sampled per iteration.")
    samples_per_prompt: int = Field(8, ge=2, description="Answers per prompt (n).")
    temperature: float = Field(0.8, gt=0.0, description="Sampling temperature (paper: 0.8).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling (paper: 0.95).")
    max_new_tokens: int = Field(48, ge=1, description="Answer length cap (paper: 100).")
    enforce_eager: bool = Field(True, description="vLLM without torch.compile: starts ~3x faster.")
    memory_utilization: float = Field(
        0.3, gt=0.0, le=1.0,
        description="GPU only: vLLM gpu_memory_utilization, the share of GPU memory per engine. "
        "On CPU the KV cache is an absolute size (kv_cache_gib), never a share of the host.",
    )
    kv_cache_gib: float | None = Field(
        None, gt=0.0,
        description="vLLM KV cache per engine in GiB (on CPU always, on GPU only when set). None: "
        "derived from the work, sequences in flight x max_model_len x KV bytes per token x 1.25.",
    )
    max_model_len: int = Field(512, ge=32, description="Longest prompt + answer the engine holds.")


class IsodataConfig(Section):
    k_init: int | None = Field(
        DEFAULT_ISODATA["k_init"], ge=1,
        description="Desired clusters (k_init). None: one per answer, so ISODATA only merges "
        "near-copies (centres closer than min_dist) and the worst answers stay as negatives; a small "
        "k_init folds off-topic answers into a good answer's cluster, where they are dropped.")
    min_size: int = Field(
        DEFAULT_ISODATA["min_size"], ge=1, description="theta_N: smaller clusters are discarded.")
    max_std: float = Field(
        DEFAULT_ISODATA["max_std"], gt=0.0, description="theta_S: split threshold (paper: 0.05).")
    min_dist: float = Field(
        DEFAULT_ISODATA["min_dist"], ge=0.0, description="theta_C: merge centres closer than this (unit "
        "vectors: 0.3 is cosine above 0.955). Answers that differ in one content word after a repeated "
        "question lie 0.37-0.46 apart.")
    max_merges: int = Field(DEFAULT_ISODATA["max_merges"], ge=0, description="P: merges per iteration.")
    max_iter: int = Field(DEFAULT_ISODATA["max_iter"], ge=1, description="I: iterations.")


class RankingConfig(Section):
    num_workers: int = Field(1, ge=1, description="RankerWorker replicas.")
    damping: float = Field(0.85, gt=0.0, lt=1.0, description="TextRank damping.")
    tol: float = Field(1e-6, gt=0.0, description="TextRank convergence tolerance.")
    max_iter: int = Field(1000, ge=1, description="TextRank iterations cap.")
    isodata: IsodataConfig = IsodataConfig()
    deduplicate: bool = Field(
        True, description="Keep one answer per ISODATA cluster; false keeps every answer (ablation).")
    order: Literal["textrank", "random", "reverse"] = Field(
        "textrank", description="Answer order that pairs come from: TextRank (the method), a seeded "
        "random order (the control the method must beat), or reversed TextRank (ablation).")
    cut_answers: Literal["keep", "last", "drop"] = Field(
        "keep", description="Answers cut at rollout.max_new_tokens (no EOS): ranked like any other "
        "(keep), ranked below every finished answer (last: never chosen over one), or left out of "
        "the ranking and its pairs (drop).")
    prompt_echoes: Literal["keep", "last", "drop"] = Field(
        "keep", description="Answers that echo the prompt (ranking.echo_share of their words are "
        "the prompt's): ranked like any other (keep), below every answer that is not an echo "
        "(last), or left out (drop). Cut answers still go below echoes. Orders pairs and lists "
        "(dpo, listwise), not the ranker's rewards.")
    echo_share: float = Field(
        0.8, gt=0.0, le=1.0, description="An answer at least this share of whose words appear in "
        "the prompt echoes it (\"My printer is not printing.\" to \"My printer is not printing.\").")
    interval: int | None = Field(
        None, ge=1, description="Pair rank gap IL; None is half the ranked list's length."
    )
    noise_share: float = Field(
        0.25, ge=0.0, le=0.5, description="Share of each group's pairs whose rejected side is a "
        "noise-injected copy of a real pair's rejected answer (0.25: one per three real pairs).")
    noise_kinds: list[Literal["ngram", "negation", "shuffle"]] = Field(
        ["ngram", "negation", "shuffle"], min_length=1, description="Noise kinds to draw from."
    )


class RewardConfig(Section):
    source: Literal["reward_model", "ranker"] = Field(
        "reward_model", description="Rewards for the policy-gradient objectives: the trained reward "
        "model, or the ranker's own TextRank score of each answer (no reward model is built).")
    lr: float = Field(1e-5, gt=0.0, description="AdamW learning rate.")
    epochs: int = Field(1, ge=1, description="Passes over each iteration's pairs.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimiser step.")
    max_length: int = Field(192, ge=16, description="Prompt + answer tokens, truncated.")
    replay_pairs: int = Field(64, ge=0, description="Earlier pairs mixed into each iteration.")
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Pairs held out for accuracy.")
    missing_eos_penalty: float = Field(
        0.0, ge=0.0, description="Policy-gradient objectives: subtracted from the reward of an answer "
        "cut at rollout.max_new_tokens instead of ending (TRL's missing_eos_penalty). The ranker's "
        "rewards n * s - 1 spread about 0.2 within a prompt.")


class PolicyConfig(Section):
    objective: str = Field(
        "dpo", description="Policy objective, a name registered in algos/objectives.py: ppo (the "
        "paper's, with a value model), grpo / rloo / reinforce_pp (critic-free), dpo (this "
        "iteration's ranked pairs) or listwise (Plackett-Luce over each prompt's ranked distinct "
        "answers). The keys below serve every objective; ppo.* holds what only PPO uses.")
    lr: float = Field(3e-6, gt=0.0, description="Policy AdamW learning rate (paper: 3e-5).")
    epochs: int = Field(1, ge=1, description="Passes over each iteration's answers (pairs, lists).")
    minibatch_size: int = Field(8, ge=1, description="Sequences per optimiser step (paper: 16).")
    kl_coef: float = Field(
        0.05, ge=0.0, description="KL weight to the frozen starting policy (paper: 0.5): ppo, rloo, "
        "reinforce_pp as a reward penalty, grpo as a loss term; dpo and listwise as a loss term on "
        "the trained answers' summed k3 KL, beside beta's implicit hold (0: beta alone).")
    nll_coef: float = Field(
        0.0, ge=0.0, description="dpo and listwise: weight of the best answer's per-token negative "
        "log-likelihood in the loss (RPO, arXiv 2404.19733): pulls the chosen answers up where DPO "
        "alone can lower chosen and rejected together (0: none).")
    forward_kl_coef: float = Field(
        0.0, ge=0.0, description="dpo and listwise: weight of KL(reference || policy) over the whole "
        "vocabulary at each trained answer token (summed per answer, mean over answers). Unlike "
        "kl_coef's k3, which sees only the sampled token, it grows when the policy drops "
        "probability the reference gave elsewhere, such as a human reply's first word (0: none).")
    length_coef: float = Field(
        0.0, ge=0.0, description="dpo and listwise: nats each answer's implicit reward loses per "
        "token (R-DPO, arXiv 2403.19159): a pair whose chosen answer is shorter pushes less "
        "towards shorter answers for their own sake (0: none).")
    old_logprobs: Literal["engine", "recompute"] = Field(
        "engine", description="Policy-gradient objectives: log-probs of the sampling policy: the "
        "rollout engine's own (it holds the learner's weights; metrics.jsonl's engine_logprob_gap, "
        "measured on the first minibatch, is about 1e-5 in float32), or a forward pass of the "
        "learner's policy over every answer.")
    clip_ratio: float = Field(0.2, gt=0.0, description="Policy-gradient objectives: ratio clip.")
    whiten_advantages: bool = Field(True, description="ppo, reinforce_pp: normalise advantages.")
    gamma: float = Field(1.0, ge=0.0, le=1.0,
                         description="ppo: GAE discount; reinforce_pp: return-to-go discount.")
    beta: float = Field(0.1, gt=0.0, description="dpo / listwise: beta of the implicit reward "
                        "beta * log(pi / pi_ref).")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="grpo: what divides each answer's reward minus its group's mean: the "
        "group's std (DeepSeekMath), one std over the batch (groups the reward barely tells apart "
        "keep small advantages), or none (Dr. GRPO).")

    answer_tokens: Literal["retokenized", "sampled"] = Field(
        "retokenized", description="dpo / listwise: the token rows of the answers they train on. "
        "retokenized: each answer's text tokenised again and ended with EOS, an answer cut at "
        "rollout.max_new_tokens too (taught as if finished); sampled: the token ids the rollout "
        "engine sampled, a cut answer without EOS (noised negatives, never sampled, are tokenised "
        "and end with EOS only where they are shorter than the cap).")

    @field_validator("objective")
    @classmethod
    def _registered(cls, name: str) -> str:
        from algos.objectives import OBJECTIVES

        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r}; registered: {', '.join(sorted(OBJECTIVES))}")
        return name


class PPOConfig(Section):
    """What only the ppo objective uses: its value model, GAE's lambda, the KL's form."""

    value_lr: float = Field(1e-5, gt=0.0, description="Value model learning rate.")
    kl_mode: Literal["token", "sequence"] = Field(
        "token", description="Per-token KL penalty, or the paper's sequence-level beta*log(pi/pi_ref)."
    )
    value_clip: float = Field(0.2, gt=0.0, description="Value prediction clip.")
    vf_coef: float = Field(0.5, ge=0.0, description="Value loss weight.")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda.")
    value_init: Literal["reward_model", "policy"] = Field(
        "reward_model", description="Value model starts from the reward model or the policy."
    )


class LearnerConfig(Section):
    zero_stage: Literal["auto", 0, 1, 2, 3] = Field(
        "auto", description="DeepSpeed ZeRO stage. auto: 0 with one learner rank, where there is "
        "nothing to shard and a stage only adds copies of the gradients and weights, 2 with several.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping.")
    lora_rank: int = Field(
        0, ge=0, description="LoRA adapters of this rank on the policy, reward and value models (only "
        "they and the scalar heads train; checkpoints and weight syncs carry merged weights); 0 trains "
        "every weight. LoRA usually wants a larger learning rate (policy.lr, reward.lr), e.g. 1e-4.")
    lora_alpha: float = Field(32.0, gt=0.0, description="LoRA scale numerator: updates scale by alpha / rank.")
    lora_targets: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="Linear layers (name suffixes) that get adapters; Llama / Qwen / "
        "Mistral names by default.")


class ResourcesConfig(Section):
    rollout_cpus: float = Field(0.5, gt=0.0, description="CPUs per RolloutWorker (Ray scheduling share).")
    rollout_gpus: float = Field(0.0, ge=0.0, description="GPUs per RolloutWorker.")
    ranker_cpus: float = Field(0.25, gt=0.0, description="CPUs per RankerWorker (Ray scheduling share).")
    learner_workers: int = Field(
        1, ge=1, description="Ranks of the learner group: data-parallel DeepSpeed LearnerWorkers, each "
        "training on its share of every minibatch (gloo on CPU, NCCL on GPU; ZeRO shards across them).")
    learner_cpus: float = Field(
        1.0, gt=0.0, description="CPUs per learner rank (Ray scheduling share; with several ranks also "
        "its torch threads).")
    learner_gpus: float = Field(0.0, ge=0.0, description="GPUs per learner rank.")
    max_worker_restarts: int = Field(
        2, ge=0, description="A rollout or ranker worker that dies or misses its deadline is replaced "
        "this often in a run; one more failure ends the run (--resume continues it).")
    rollout_timeout_s: float = Field(
        1800.0, gt=0.0, description="Deadline of one rollout worker call (a chunk of prompts to "
        "answer, training or evaluation): a worker past it is killed, replaced and its chunk redone. "
        "Generous: a CPU answers a default chunk in about 30 s.")
    ranker_timeout_s: float = Field(
        600.0, gt=0.0, description="Deadline of one ranker worker call (a chunk of prompts to rank); "
        "past it, as for rollouts.")
    weight_sync_timeout_s: float = Field(
        600.0, gt=0.0, description="Deadline of one rollout worker's weight reload; past it, the worker "
        "is replaced (the replacement starts from the new weights).")
    learner_timeout_s: float = Field(
        7200.0, gt=0.0, description="Deadline of one learner call (a training phase, a checkpoint); past "
        "it the run stops with an error naming the call and the rank, and --resume continues it.")
    worker_start_timeout_s: float = Field(
        900.0, gt=0.0, description="How long a new worker (engine start included) may take to be ready.")


class ServeConfig(Section):
    enabled: bool = Field(
        False, description="The training job starts the Serve app on its run after the first checkpoint; "
        "the app then follows each new checkpoint and lives as long as the Ray cluster.")
    replica_cpus: float = Field(0.25, gt=0.0, description="CPUs per Serve replica (Ray scheduling share).")
    replica_gpus: float = Field(0.0, ge=0.0, description="GPUs per Serve replica.")
    host: str = Field("127.0.0.1", description="HTTP host.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    api_key: SecretStr | None = Field(
        None, description="Bearer token clients must send; null: the CROWDLESS_API_KEY environment variable, "
        "or an open API where that is unset too. Never written out: a run's config.yaml records '***'.")

    @field_validator("api_key", mode="before")
    @classmethod
    def _recorded_key_is_no_key(cls, value):
        # a config.yaml written by a run holds '***' in the key's place: the key itself lives elsewhere
        return None if value == SECRET_MARK else value
    max_tokens_limit: int = Field(512, ge=1, description="Largest max_tokens a request may ask.")
    max_n: int = Field(8, ge=1, description="Largest n a request may ask.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    poll_seconds: float = Field(2.0, gt=0.0, description="How often replicas look for a new checkpoint.")
    max_num_seqs: int = Field(
        32, ge=1, description="Sequences one replica decodes at once; sizes its CPU KV cache.")
    state_dir: str = Field(
        "runs/service", description="The tuning service's state: its database (jobs, files), uploaded "
        "files and each job's run directory. The environment variable CROWDLESS_STATE_DIR overrides it.")


class ServiceConfig(Section):
    """The tuning service on the Serve app: /v1/files and /v1/fine_tuning/jobs (serve/tuning.py)."""

    max_concurrent_jobs: int = Field(1, ge=1, description="Jobs running at once; later ones wait as queued.")
    max_file_bytes: int = Field(10_000_000, ge=1024, description="Largest prompts file an upload may hold.")
    tunable_models: list[str] = Field(
        default_factory=list, description="Models a job may tune besides the server's model.policy and "
        "the embedded names (embedded:...): model references or paths on the cluster.")
    max_resident_models: int = Field(
        2, ge=1, description="Fine-tuned models one replica keeps loaded (each an engine of its own); "
        "the least recently used one is unloaded for the next.")
    job_timeout_s: float = Field(
        6 * 3600.0, gt=0.0, description="A running job longer than this is stopped and marked failed.")


class EvalConfig(Section):
    every: int = Field(
        0, ge=0, description="Held-out evaluation every N iterations, before the first and after the "
        "last (greedy answers scored against references; rows eval_* in metrics.jsonl); 0: none.")
    max_prompts: int | None = Field(
        100, ge=1, description="Distinct prompts per evaluation set (trained: the first N the run trains "
        "on; unseen: the first N of its held-out split; ood: N of eval.ood_source); null: all of them.")
    dev_prompts: int = Field(
        50, ge=0, description="The dev set: up to N held-out prompts after the unseen set's, to choose "
        "settings on (docs/evaluation.md), so that the unseen and ood figures a setting is reported "
        "with never chose it; 0 or eval.max_prompts null: none.")
    ood_source: str | None = Field(
        "auto", description="Out-of-domain set: first turns of this data source (any data.source "
        "spelling), without any prompt of the run's data; auto: embedded:chitchat, or "
        "embedded:chatterbot for a run on embedded:chitchat; null: no out-of-domain set.")
    logprob_references: int = Field(
        4, ge=1, description="ref_logprob: a prompt's first N references are scored under the policy "
        "(teacher forcing) and averaged; a few prompts of the default corpus have over 100.")
    max_new_tokens: int = Field(64, ge=1, description="Token cap of the greedy evaluation answers.")
    judge_embedding: str = Field(
        "embedded:all-minilm-l6-v2",
        description="Sentence-transformers model for the answer-reference cosine; a model other "
        "than model.embedding avoids the ranker judging its own preferences.")
    agreement_prompts: int = Field(
        48, ge=0, description="Held-out prompts for the reward-model / ranker order agreement at the "
        "end of a run (4 sampled answers each); 0: skip it.")
    bootstrap_resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples.")


class CrowdlessConfig(Section):
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    ranking: RankingConfig = RankingConfig()
    reward: RewardConfig = RewardConfig()
    policy: PolicyConfig = PolicyConfig()
    ppo: PPOConfig = PPOConfig()
    learner: LearnerConfig = LearnerConfig()
    resources: ResourcesConfig = ResourcesConfig()
    serve: ServeConfig = ServeConfig()
    service: ServiceConfig = ServiceConfig()
    eval: EvalConfig = EvalConfig()

    @property
    def trains_reward_model(self) -> bool:
        """Only the policy-gradient objectives scored by a reward model train one."""
        from algos.objectives import get_objective

        return get_objective(self.policy.objective).kind == "policy_gradient" and self.reward.source == "reward_model"

    @property
    def reward_scorer(self) -> str | None:
        """What scores answers as this run's reward (the held-out order check, /v1/rewards): its
        trained "reward_model", a preference objective's "implicit_reward" (beta * log pi / pi_ref),
        or None where rewards came from the ranker alone."""
        from algos.objectives import get_objective

        if self.trains_reward_model:
            return "reward_model"
        return "implicit_reward" if get_objective(self.policy.objective).kind == "preference" else None

    @model_validator(mode="after")
    def _resolve_zero_stage(self) -> CrowdlessConfig:
        if self.learner.zero_stage == "auto":
            self.learner.zero_stage = 0 if self.resources.learner_workers == 1 else 2
        return self

    @model_validator(mode="after")
    def _lora_needs_whole_weights(self) -> CrowdlessConfig:
        if self.learner.lora_rank and self.learner.zero_stage == 3:
            raise ValueError("learner.lora_rank needs learner.zero_stage 0, 1 or 2: under ZeRO-3 the "
                             "weights the adapters merge into are sharded")
        return self

    @model_validator(mode="after")
    def _preference_anchors_need_a_preference_objective(self) -> CrowdlessConfig:
        from algos.objectives import get_objective

        if get_objective(self.policy.objective).kind != "preference":
            for key in ("nll_coef", "forward_kl_coef", "length_coef"):
                if getattr(self.policy, key) > 0:
                    raise ValueError(f"policy.{key} applies to dpo and listwise only, not to "
                                     f"policy.objective {self.policy.objective!r}: set it to 0")
        return self

    @model_validator(mode="after")
    def _minibatch_fits(self) -> CrowdlessConfig:
        batch = self.rollout.prompts_per_iteration * self.rollout.samples_per_prompt
        if self.policy.minibatch_size > batch:
            raise ValueError(
                f"policy.minibatch_size ({self.policy.minibatch_size}) exceeds the rollout batch "
                f"(rollout.prompts_per_iteration * rollout.samples_per_prompt = {batch})"
            )
        return self


def _format_errors(error: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(root)"
        got = f" (got {item['input']!r})" if item["type"] != "missing" and "input" in item else ""
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {path}: {message}{got}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'policy.kl_coef=0.1' -> (['policy', 'kl_coef'], 0.1); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.split("."), value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: depth + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return tree


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, or a bare name of a packaged config ('tiny' or 'tiny.yaml')."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    packaged = CONFIG_DIR / (candidate.name if candidate.suffix else f"{candidate.name}.yaml")
    if packaged.exists():
        return packaged
    raise ConfigError(f"config file not found: {path}")


# Keys that every objective shares, under ppo.* before they moved to policy.* (refused by name).
MOVED_TO_POLICY = ("lr", "epochs", "minibatch_size", "kl_coef", "old_logprobs", "clip_ratio",
                   "whiten_advantages", "gamma")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CrowdlessConfig:
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        file = resolve_config_path(path)
        origin = str(file)
        try:
            tree = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"{file}: expected a mapping of sections at the top level")
    if overrides:
        tree = apply_overrides(tree, overrides)
        origin += " + overrides"
    moved = [f"ppo.{key} is now policy.{key}" for key in MOVED_TO_POLICY
             if isinstance(tree.get("ppo"), dict) and key in tree["ppo"]]
    if moved:
        raise ConfigError(f"invalid config ({origin}):\n  " + "\n  ".join(moved)
                          + "\n  (ppo.* holds only what PPO alone uses; the keys every objective shares are policy.*)")
    try:
        return CrowdlessConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


class ControlConfig(Section):
    """RUN_DIR/control.yaml: what a user may change while a job runs (jobs/scale.py writes it)."""

    rollout_workers: int | None = Field(
        None, ge=1, le=1024, description="Rollout workers from the next iteration on; null: as they are.")


def load_control(path: Path) -> ControlConfig:
    """control.yaml, validated like a config; ConfigError naming the file and key otherwise."""
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping like 'rollout_workers: 2'")
    try:
        return ControlConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path)).replace("invalid config", "invalid control file")) from None


def flat_keys(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'policy': {'lr': 1e-5}} -> {'policy.lr': 1e-5}: a config tree by dotted key."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_tree(config: CrowdlessConfig) -> dict[str, Any]:
    """The config as plain data, secrets masked: what config.yaml records and a resume compares."""
    tree = config.model_dump(mode="json")
    if config.serve.api_key is not None:
        tree["serve"]["api_key"] = SECRET_MARK
    return tree


def dump_config(config: CrowdlessConfig) -> str:
    return yaml.safe_dump(config_tree(config), sort_keys=False)
