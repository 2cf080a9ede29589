"""The crowdless training job: rollout -> rank -> policy update -> weight sync, repeated.

The update is policy.objective: online DPO on the ranked pairs by default, listwise, or a
policy-gradient objective (ppo, the paper's, after a reward model trained on the pairs; grpo,
rloo, reinforce_pp), always with a KL term to the frozen starting policy.

    python jobs/train.py --config configs/tiny.yaml [--run-dir DIR] [--resume] [key.sub=value ...]
    ray job submit --working-dir . -- python jobs/train.py --config configs/default.yaml

`ray.init()` joins the cluster in RAY_ADDRESS (as under `ray job submit`) or starts a
local one. Everything the run produces lands in the run directory (cluster/run_dir.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

import numpy as np  # noqa: E402

from cluster.run_dir import RunDirError  # noqa: E402
from configs.schema import ConfigError, CrowdlessConfig, config_tree, dump_config, load_config  # noqa: E402
from crowdless.data.prompt_sets import DataError, PromptExample, load_prompt_split  # noqa: E402
from crowdless.models.loading import ModelError, resolve_dtype, resolve_model  # noqa: E402
from crowdless.ranking import ranking_statistics  # noqa: E402
from crowdless.evaluation.report import POLICY_SIGNALS, write_report  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Label-free RLHF: rollouts, ranking, reward model, PPO.")
    parser.add_argument("--config", default="default", help="YAML file or packaged name (default, tiny, paper)")
    parser.add_argument("--run-dir", help="run directory (overrides run.dir)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/latest")
    parser.add_argument("--force-config", action="store_true",
                        help="resume even though the config differs from the one the run started with")
    parser.add_argument("--verbose", action="store_true",
                        help="show engine and library logs live (default: RUN_DIR/logs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. policy.kl_coef=0.1")
    return parser.parse_intermixed_args(argv)


def prompts_for_iteration(prompts: list[PromptExample], iteration: int, per_iteration: int,
                          seed: int) -> list[PromptExample]:
    """Iteration i takes the next per_iteration prompts of a stream of seeded epoch shuffles,
    so a resumed run sees exactly the prompts it would have seen."""
    chosen = []
    for k in range((iteration - 1) * per_iteration, iteration * per_iteration):
        epoch, position = divmod(k, len(prompts))
        chosen.append(prompts[np.random.default_rng([seed, epoch]).permutation(len(prompts))[position]])
    return chosen


class PhaseTimer:
    """Times an iteration's phases (seconds_* in metrics.jsonl) and appends each phase's start to
    RUN/events.jsonl, which the tuning service's job events and anyone tailing the run read."""

    def __init__(self, events: Path, iteration: int):
        self.seconds: dict[str, float] = {}
        self.events, self.iteration = events, iteration

    @contextmanager
    def __call__(self, phase: str):
        with self.events.open("a") as out:
            out.write(json.dumps({"time": time.time(), "iteration": self.iteration, "phase": phase}) + "\n")
        start = time.perf_counter()
        yield
        self.seconds[f"seconds_{phase}"] = round(time.perf_counter() - start, 3)


def start_workers(config: CrowdlessConfig, policy_path: str, resume_from: Path | None, env: dict[str, str]):
    import ray

    from actors.learner_worker import LearnerWorker
    from crowdless.learner.replay import load_replay
    from actors.ranker_worker import RankerWorker
    from actors.rollout_worker import RolloutWorker
    from cluster.console import ProgressBoard
    from cluster.learner_group import LearnerGroup
    from cluster.pool import WorkerPool

    res = config.resources
    from cluster.resources import check_resources

    check_resources(config, ray.cluster_resources())
    reference_path = resolve_model(config.model.policy)
    reward_path = resolve_model(config.model.reward_backbone or config.model.policy)
    value_path = replay = None
    if resume_from is not None:  # reward and value models exist only where the objective used them
        policy_path = str(resume_from / "policy")
        if (resume_from / "reward_model").exists():
            reward_path = str(resume_from / "reward_model")
        if (resume_from / "value_model").exists():
            value_path = str(resume_from / "value_model")
        replay = load_replay(resume_from / "replay.jsonl")
    board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
    learner = LearnerGroup(config, LearnerWorker,
                           (config, policy_path, reference_path, reward_path, value_path, replay), env, board)
    rollouts = WorkerPool(RolloutWorker, (policy_path, config.model, config.rollout, config.run.seed),
                          config.rollout.num_workers, num_cpus=res.rollout_cpus, num_gpus=res.rollout_gpus,
                          max_replacements=res.max_worker_restarts, name="rollout", env=env,
                          chunks_per_worker=config.rollout.chunks_per_worker, call_timeout_s=res.rollout_timeout_s,
                          start_timeout_s=res.worker_start_timeout_s)
    rankers = WorkerPool(RankerWorker, (config.model.embedding, config.ranking, config.run.seed),
                         config.ranking.num_workers, num_cpus=res.ranker_cpus, num_gpus=0,
                         max_replacements=res.max_worker_restarts, name="ranker", env=env,
                         call_timeout_s=res.ranker_timeout_s, start_timeout_s=res.worker_start_timeout_s)
    return learner, rollouts, rankers


def trained_prompts(config: CrowdlessConfig, train_prompts: list[PromptExample]) -> list[str]:
    """Every prompt the run trains on, iteration by iteration, as its samples will show them."""
    return [p.prompt for iteration in range(1, config.run.iterations + 1) for p in prompts_for_iteration(
        train_prompts, iteration, config.rollout.prompts_per_iteration, config.run.seed)]


def evaluation_sets(config: CrowdlessConfig, run_dir: Path, train_prompts: list[PromptExample],
                    eval_prompts: list[PromptExample], resuming: bool) -> dict:
    """The evaluation's prompt sets (trained, unseen, ood, dev), fixed in RUN_DIR/eval/sets.json when
    the run starts: a run resumed after its first checkpoint judges the very same prompts."""
    from crowdless.evaluation.judge import build_sets, load_sets, save_sets

    path = run_dir / "eval" / "sets.json"
    if path.exists() and resuming:
        return load_sets(path)
    sets = build_sets(config.eval, config.data.source, train_prompts, eval_prompts,
                      trained_prompts(config, train_prompts), config.run.seed)
    save_sets(path, sets)
    return sets


def print_header(config: CrowdlessConfig, run_dir: Path, policy_path: str, start_iteration: int,
                 train_prompts: list, eval_prompts: list, report, verbose: bool) -> None:
    from transformers import AutoConfig

    from crowdless.engines.vllm_args import GIB, kv_bytes_per_token, kv_cache_bytes

    r, res = config.rollout, config.resources
    state = f"resuming at iteration {start_iteration}" if start_iteration > 1 else "new run"
    budget = config.run.stop_at_drift
    until = "" if budget is None else f" or until policy_drift reaches {budget:g}"
    dtype = resolve_dtype(config.model.dtype)
    per_token = kv_bytes_per_token(AutoConfig.from_pretrained(policy_path), dtype)
    kv_gib = kv_cache_bytes(r, per_token, r.prompts_per_iteration * r.samples_per_prompt) / GIB
    kv = f"KV cache {kv_gib:.2f} GiB" if r.backend == "vllm" else "transformers generate"
    lines = [
        f"crowdless: {run_dir} ({state}, {config.run.iterations} iterations{until})",
        f"  policy   {config.model.policy} ({dtype}" + (", auto" if config.model.dtype == "auto" else "") + ")",
        f"  data     {config.data.source}: {report.loaded} rows, {report.distinct_prompts} distinct prompts; "
        + (f"split by prompt: {len(train_prompts)} train / " if config.data.eval_source is None else
           f"{len(train_prompts)} train; held out from {config.data.eval_source}: ")
        + f"{len(eval_prompts)} held-out rows"
        + (f" ({report.skipped} malformed rows skipped)" if report.skipped else ""),
        f"  batch    {r.prompts_per_iteration} prompts x {r.samples_per_prompt} answers, "
        f"<= {r.max_new_tokens} new tokens",
        f"  workers  {r.num_workers} rollout ({r.backend}, {res.rollout_cpus:g} CPU, {kv}), "
        f"{config.ranking.num_workers} ranker ({res.ranker_cpus:g} CPU), "
        f"learner ({res.learner_workers} x {res.learner_cpus:g} CPU, {res.learner_gpus:g} GPU, "
        f"ZeRO-{config.learner.zero_stage})",
        f"  logs     {run_dir / 'logs'}" + (" (shown live: --verbose)" if verbose else "  (--verbose shows them live)"),
    ]
    print("\n".join(lines), flush=True)


def train(config: CrowdlessConfig, resume: bool, verbose: bool = False, force_config: bool = False) -> Path:
    import ray

    from cluster.console import log_dir_env, quiet_driver_libraries
    from crowdless.learner.checkpoint import TRAINING_STATE
    from cluster.run_dir import (MetricsLog, check_room_for_checkpoint, check_run_dir, checkpoint_dir, config_changes,
                                 discard_incomplete_checkpoints, is_run_dir, latest_checkpoint, mark_complete,
                                 mark_stopped, prune_training_state, stopped_at)

    run_dir = Path(config.run.dir).resolve()
    check_run_dir(run_dir)
    if resume and is_run_dir(run_dir) and not force_config:
        changes = config_changes(run_dir, config_tree(config))
        if changes:
            raise ConfigError(f"{run_dir} was started with another config; resuming it changes "
                              + "; ".join(changes) + " (only run.iterations may change: pass --force-config "
                              "to resume with the new values anyway)")
    latest = latest_checkpoint(run_dir)
    if latest and not resume:
        raise ConfigError(f"{run_dir} already holds checkpoints (latest: iteration {latest[0]}); "
                          "pass --resume to continue it, or choose another --run-dir")
    start_iteration = latest[0] + 1 if (resume and latest) else 1
    run_dir.mkdir(parents=True, exist_ok=True)
    removed = discard_incomplete_checkpoints(run_dir, start_iteration - 1)
    if removed:
        print(f"[crowdless] removed incomplete checkpoints of a stopped run: {', '.join(removed)}", flush=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    if not verbose:
        quiet_driver_libraries()

    train_prompts, eval_prompts, report = load_prompt_split(config.data, config.run.seed)
    if start_iteration > config.run.iterations:
        print(f"[crowdless] {run_dir} already finished {latest[0]} iterations", flush=True)
        return run_dir
    if resume and (stop := stopped_at(run_dir, config.run.stop_at_drift)):
        print(f"[crowdless] {run_dir} stopped at iteration {stop['iteration']} ({stop_reason(stop)}): its last "
              f"policy is iteration {latest[0]}'s; a higher run.stop_at_drift lets it go on", flush=True)
        return run_dir
    policy_path = resolve_model(config.model.policy)
    print_header(config, run_dir, policy_path, start_iteration, train_prompts, eval_prompts, report, verbose)

    # RAY_ADDRESS (ray job submit) or a new local cluster; worker output goes to RUN_DIR/logs/
    ray.init(ignore_reinit_error=True, log_to_driver=verbose,
             logging_level="INFO" if verbose else "ERROR")
    env = log_dir_env(run_dir, verbose)
    started = time.perf_counter()
    print("[crowdless] starting workers (engines load; about a minute on a CPU) ...", flush=True)
    learner, rollouts, rankers = start_workers(
        config, policy_path, latest[1] if start_iteration > 1 else None, env)
    print(f"[crowdless] workers ready in {time.perf_counter() - started:.0f}s", flush=True)
    if start_iteration > 1:  # optimizer moments and RNG: the resumed run continues the stopped one
        restored = learner.run("load_training_state", str(latest[1]))
        print(f"[crowdless] resumed from {latest[1]}: optimizer state of "
              + (", ".join(restored) if restored else "no model (not in the checkpoint, or saved by a "
                 "learner group of another size or ZeRO stage: moments restart)"), flush=True)
    metrics_log = MetricsLog(run_dir, config.run.log_tensorboard, resume_after=start_iteration - 1)
    total = final = config.run.iterations

    def generate(prompts, n, greedy, max_new_tokens):
        return rollouts.map("generate", prompts, n, greedy, max_new_tokens, progress="eval")

    def answer_logprobs(prompts, answers):
        return learner.run("answer_logprobs", prompts, answers)

    evaluation = None
    if config.eval.every:  # 0. the starting policy on the evaluation sets: the baseline
        from crowdless.evaluation.judge import HeldOutEvaluation

        sets = evaluation_sets(config, run_dir, train_prompts, eval_prompts, resuming=start_iteration > 1)
        print("[crowdless] evaluation sets: " + ", ".join(f"{name} {len(prompts)} prompts"
                                                         for name, prompts in sets.items()), flush=True)
        evaluation = HeldOutEvaluation(config.eval, sets, run_dir / "eval", config.run.seed,
                                       circular=config.eval.judge_embedding == config.model.embedding)
        if start_iteration == 1:
            metrics_log.log(0, prefixed("eval_", evaluation.evaluate("iter-0", generate, answer_logprobs)))
    for iteration in range(start_iteration, total + 1):
        check_room_for_checkpoint(run_dir)
        phase = PhaseTimer(run_dir / "events.jsonl", iteration)
        control_error = apply_control(run_dir, rollouts)
        prompts = [p.prompt for p in prompts_for_iteration(
            train_prompts, iteration, config.rollout.prompts_per_iteration, config.run.seed)]

        # 1. Rollout: n answers per prompt from the current policy.
        with phase("rollout"):
            # Seeded by (run seed, iteration, prompt): a resumed run and a control variant sample
            # what the uninterrupted run would have, given the same weights.
            sampling_seed = config.run.seed * 1_000_003 + iteration
            samples = rollouts.map("generate", prompts, None, False, None, sampling_seed, progress="rollout")
            rollout_load = rollouts.last_map
        flat = [rollout for per_prompt in samples for rollout in per_prompt]

        # 2. Rank without labels: TextRank, ISODATA, noise-injected pairs.
        with phase("rank"):
            groups = [(i, p, [r.response_text for r in rs], [r.finished for r in rs])
                      for i, (p, rs) in enumerate(zip(prompts, samples))]
            ranked = rankers.map("rank", groups, iteration, progress="rank")
        pairs = [pair for group in ranked for pair in group.pairs]
        write_samples(run_dir, iteration, ranked)

        # 3. Reward model on this iteration's pairs (plus replay), where the objective uses one.
        rm_metrics = {}
        if config.trains_reward_model:
            with phase("reward_model"):
                rm_metrics = learner.run("train_reward", pairs, iteration,
                                         progress=("reward_model", iteration, "batch"))

        # 4. Policy update with the configured objective (policy.objective), KL to the frozen reference.
        with phase("policy"):
            policy_metrics = learner.run("train_policy", flat, iteration, ranked,
                                         progress=("policy", iteration, "minibatch"))
        if policy_metrics.get("stopped_at_drift"):  # nothing trained: the policy stays iteration - 1's
            final = iteration - 1
            stop = mark_stopped(run_dir, iteration, policy_metrics["policy_drift"], config.run.stop_at_drift)
            print(f"[crowdless] stopping at iteration {iteration}: {stop_reason(stop)}; "
                  f"the run ends on iteration {final}'s policy", flush=True)
            break

        # 5. Rollout workers serve the new policy.
        with phase("weight_sync"):
            sync_seconds = rollouts.broadcast("load_weights", learner.policy_state_ref(), sticky=True,
                                              timeout_s=config.resources.weight_sync_timeout_s)

        # 6. Checkpoint files (complete only at step 8, once the iteration is on record).
        with phase("checkpoint"):
            learner.run("save_checkpoint", str(checkpoint_dir(run_dir, iteration)))

        # 7. Held-out evaluation of the new policy, every eval.every iterations and at the end.
        held_out = {}
        if evaluation and (iteration % config.eval.every == 0 or iteration == total):
            with phase("eval"):
                held_out = prefixed("eval_", evaluation.evaluate(f"iter-{iteration}", generate, answer_logprobs))

        generated_tokens = sum(len(r.response_ids) for r in flat)
        metrics = {
            **rm_metrics, **policy_metrics, **held_out, **phase.seconds,
            **ranking_statistics(ranked),
            "response_length": float(np.mean([len(r.response_ids) for r in flat])),
            "response_tokens": sum(len(r.response_ids) for r in flat),
            "response_truncated": float(np.mean([not r.finished for r in flat])),  # cut at the cap
            "rollout_tokens_per_second": generated_tokens / phase.seconds["seconds_rollout"],
            "weight_sync_seconds_max": max(sync_seconds),
            "rollout_workers": len(rollouts),
            # per rollout worker, in worker order: prompts answered and their prompts/s (pulled chunks)
            "rollout_prompts_per_worker": rollout_load["items"],
            "rollout_prompts_per_second_per_worker": [
                round(items / seconds, 3) if seconds else 0.0
                for items, seconds in zip(rollout_load["items"], rollout_load["seconds"])],
            "rollout_nodes": len(set(rollouts.nodes)),
            "learner_workers": learner.size,
            "control_error": control_error,  # a control.yaml value that was refused, or None
            # rollout or ranker workers lost or past their deadline this iteration, each replaced
            "worker_events": rollouts.take_events() + rankers.take_events(),
            "learner_nodes": len(set(learner.nodes)),
        }
        metrics_log.log(iteration, metrics)

        # 8. Mark the checkpoint complete. A job stopped before this line resumes from the previous
        # checkpoint and redoes this iteration (its metrics line is dropped), after it goes on: no
        # iteration is lost from the record or counted twice.
        mark_complete(run_dir, iteration, {"prompts_seen": iteration * len(prompts)})
        prune_training_state(run_dir, iteration, TRAINING_STATE)
        print(iteration_line(iteration, total, metrics), flush=True)
        if iteration == start_iteration and (hint := precision_hint(metrics, resolve_dtype(config.model.dtype))):
            print(hint, flush=True)
        if config.serve.enabled and iteration == start_iteration:
            start_serving(run_dir, config)
    if evaluation and final < total and final % config.eval.every:  # stopped before judging its last
        metrics_log.amend_last(prefixed("eval_", evaluation.evaluate(f"iter-{final}", generate, answer_logprobs)))
    metrics_log.close()
    print_summary(run_dir, final)
    if evaluation:
        report_held_out(evaluation, final, generate, learner, config)
    if config.serve.enabled and final < start_iteration:  # stopped before this attempt completed an iteration
        start_serving(run_dir, config)
    return run_dir


def stop_reason(stop: dict) -> str:
    return (f"policy_drift {stop['policy_drift']:.2f} nats per answer reached run.stop_at_drift "
            f"{stop['stop_at_drift']:g}")


def apply_control(run_dir: Path, rollouts) -> str | None:
    """RUN_DIR/control.yaml's rollout_workers, applied before an iteration. A bad file or a size the
    cluster cannot place is refused and reported (the returned error); the job goes on as it was."""
    from cluster.pool import PoolError
    from cluster.run_dir import read_control

    control, error = read_control(run_dir)
    workers = control.rollout_workers
    if error is None and workers is not None and workers != len(rollouts):
        print(f"[crowdless] scaling rollout workers {len(rollouts)} -> {workers}", flush=True)
        try:
            rollouts.resize(workers)
        except PoolError as exc:
            error = f"rollout_workers={workers} refused: {exc}"
    if error is not None:
        print(f"[crowdless] control.yaml: {error}; keeping {len(rollouts)} rollout workers", flush=True)
    return error


def prefixed(prefix: str, metrics: dict) -> dict:
    return {prefix + key: value for key, value in metrics.items()}


def report_held_out(evaluation, total: int, generate, learner, config) -> None:
    """The final policy against the starting one on every evaluation set, and how well the reward
    model (or the policy's implicit reward) and the ranker order sampled answers the way their
    similarity to the references does."""
    from crowdless.evaluation.judge import ORDERERS, format_sets_table, verdict_line

    tables = evaluation.compare("iter-0", f"iter-{total}")
    agreement = {}
    if config.eval.agreement_prompts:
        ranker_embedder = None
        if config.model.embedding != config.eval.judge_embedding:
            from crowdless.ranking import load_embedder

            ranker_embedder = load_embedder(config.model.embedding)
        scorers = {}
        scorer = learner.run("reward_scorer")
        if scorer is not None:
            name, method = scorer
            scorers[name] = lambda prompts, answers: learner.run(method, prompts, answers)
        agreement = evaluation.agreement(generate, scorers, ranker_embedder)
    report = write_report(evaluation.out_dir, {f"iter-{total}": tables}, agreement,
                          Path(evaluation.out_dir).parent / "metrics.jsonl", circular=evaluation.circular)
    sizes = ", ".join(f"{name} {len(prompts)}" for name, prompts in evaluation.sets.items())
    print(f"[crowdless] evaluation (distinct prompts: {sizes}; greedy answers against references): "
          f"iteration {total} vs the starting model: {verdict_line(tables, evaluation.circular)}", flush=True)
    print("  difference from the starting model (95% interval):", flush=True)
    print(format_sets_table(tables, evaluation.circular), flush=True)
    if agreement:
        orderers = [who for who in ORDERERS if f"{who}_full_order" in agreement]
        print(f"  answer order agreement with the reference ({agreement['agreement_answers']} answers, "
              f"{agreement['agreement_prompts']} prompts; random {agreement['agreement_random_full']:.3f}): "
              + ", ".join(f"{who.replace('_', ' ')} {agreement[f'{who}_full_order']:.3f} full / "
                          f"{agreement[f'{who}_pairwise']:.3f} pairwise" for who in orderers), flush=True)
    print(f"  report: {report}", flush=True)


def iteration_line(iteration: int, total: int, metrics: dict) -> str:
    seconds = sum(v for k, v in metrics.items() if k.startswith("seconds_"))
    nan = float("nan")
    # reward and rm_acc only where a reward model scores: the ranker's rewards are centred (mean 0)
    scored = (f"reward {metrics.get('reward_mean', nan):+.3f}  rm_acc {metrics['rm_accuracy']:.2f}  "
              if "rm_accuracy" in metrics else "")
    trained = "".join(f"{label} {_figure(metrics[key], digits)}  "
                      for key, label, digits, _ in POLICY_SIGNALS if key in metrics)
    problems = f"  control error: {metrics['control_error']}" if metrics.get("control_error") else ""
    if metrics.get("worker_events"):
        problems += f"  {len(metrics['worker_events'])} worker(s) replaced"
    return (f"[iter {iteration}/{total}] {scored}{trained}"
            f"pairs {metrics['pairs']}  "
            f"len {metrics['response_length']:.1f}  "
            + (f"unseen chrF {metrics['eval_unseen_chrf']:.2f} ref_logprob {metrics['eval_unseen_ref_logprob']:.2f}  "
               if "eval_unseen_chrf" in metrics else "")
            + f"{seconds:.0f}s ("
            + " ".join(f"{k[8:]} {v:.0f}" for k, v in metrics.items() if k.startswith("seconds_")) + ")"
            + problems)


def precision_hint(metrics: dict, dtype: str) -> str | None:
    """A line for a bf16 run whose policy phase left most weights as they started: steps under half
    a bf16 rounding step are lost to the weights the policy samples and is saved with."""
    moved = metrics.get("policy_weights_moved")
    if dtype != "bfloat16" or moved is None or moved >= 0.5:
        return None
    return (f"[crowdless] note: {moved:.0%} of the policy's weights differ from the start. In bf16 a "
            "step smaller than half a rounding step leaves a weight as it was; model.dtype=float32, "
            "or a larger policy.lr, lets small steps through (docs/experiments.md E19)")


def start_serving(run_dir: Path, config: CrowdlessConfig) -> None:
    """serve.enabled: run the Serve app on this run; its replicas pick up every later checkpoint."""
    from serve.app import start_app

    key = config.serve.api_key.get_secret_value() if config.serve.api_key else None  # config.yaml holds '***'
    # the app's tuning service keeps its state in the run (not in whatever folder the job runs in)
    # unless CROWDLESS_STATE_DIR says otherwise
    start_app(str(run_dir), str(run_dir / "config.yaml"), [f"serve.state_dir={run_dir / 'service'}"],
              config.serve.host, config.serve.port, api_key=key)
    print(f"[crowdless] serving {run_dir} at http://{config.serve.host}:{config.serve.port}/v1 "
          "(follows new checkpoints; lives as long as the Ray cluster)", flush=True)


def write_samples(run_dir: Path, iteration: int, ranked: list) -> None:
    """RUN_DIR/samples/iter-N.jsonl: every prompt's answers, scores, clusters and pairs, to inspect."""
    folder = run_dir / "samples"
    folder.mkdir(exist_ok=True)
    with (folder / f"iter-{iteration}.jsonl").open("w") as out:
        for group in ranked:
            out.write(json.dumps(group.to_json()) + "\n")


def print_summary(run_dir: Path, total: int) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    rows = [row for row in rows if row["iteration"] >= 1]  # iteration 0: the baseline evaluation
    first, last = rows[0], rows[-1]
    print(f"[crowdless] done: {total} iterations in {run_dir}", flush=True)
    for key in ("reward_mean", "rm_accuracy", *(key for key, *_ in POLICY_SIGNALS), "response_length", "pairs"):
        # a figure this objective does not report; without a reward model the ranker's rewards are
        # centred per prompt (mean 0), so reward_mean says nothing
        if key not in last or (key == "reward_mean" and "rm_accuracy" not in last):
            continue
        print(f"  {key:<16} iteration {first['iteration']}: {_figure(first.get(key))}  ->  "
              f"iteration {last['iteration']}: {_figure(last.get(key))}")
    print(f"  policy: {run_dir / 'checkpoints' / 'latest' / 'policy'}   metrics: {run_dir / 'metrics.jsonl'}",
          flush=True)


def _figure(value, digits: int = 3) -> str:
    """A float rounded for the console, without the sign of a rounded-away negative (-0.000)."""
    return f"{round(value, digits) + 0.0:.{digits}f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"run.dir={args.run_dir}"] if args.run_dir else [])
    config = None
    try:
        config = load_config(args.config, overrides)
        train(config, args.resume, args.verbose, args.force_config)
    except (ConfigError, DataError, ModelError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a worker or engine failed: its cause here, the whole story in logs/
        from cluster.calls import failure_cause

        logs = Path(config.run.dir if config else "runs") / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "driver-error.log").write_text(traceback.format_exc())
        print(f"error: {failure_cause(exc)}\n(traceback: {logs / 'driver-error.log'}; worker logs: {logs}/)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
