"""RUN/eval/: metrics.json (every figure), report.md (the tables a person reads) and PNG plots.

    metrics_over_iterations.png   evaluation metrics per iteration, a line per set, beside the reward
                                  model's score (or, without one, the objective's own training
                                  signal: POLICY_SIGNALS)
    answer_lengths.png            answer-length distribution (unseen set) of the baseline and the last system
"""

from __future__ import annotations

import json
from pathlib import Path

from crowdless.evaluation.judge import CIRCULAR_NOTE, ORDERERS, SETS, read_answers, verdict

# What each policy objective reports about its own training, as metrics.jsonl names it:
# (key, console label, digits, plot title). The policy-gradient objectives report the KL to the
# reference; dpo the share of its pairs whose implicit reward orders them right, and the margin;
# listwise the share of its lists whose best answer it scores highest; each the share of the
# policy's weights that moved (in bf16 a short run can leave most where they were), and its KL to
# the start on the answers it sampled before training on them (no labels: E25).
POLICY_SIGNALS = (
    ("kl", "kl", 4, "KL to the reference (trained)"),
    ("policy_drift", "drift", 2, "KL to the start on its own samples, nats per answer"),
    ("reward_accuracy", "pair_acc", 2, "pairs ordered right by the policy (trained)"),
    ("reward_margin", "margin", 3, "DPO implicit reward margin (trained)"),
    ("top1_accuracy", "top1", 2, "lists whose best answer scores highest (trained)"),
    ("policy_weights_moved", "moved", 2, "share of the policy's weights changed from the start"),
)


# Metrics plotted over iterations, a line per evaluation set.
PLOTTED = ("chrf", "bleu", "meteor", "meteor_nosyn", "ref_logprob", "cosine", "loop")


def _table_markdown(name: str, table: dict[str, dict[str, float]], circular: bool) -> list[str]:
    lines = [f"| metric | baseline | {name} | difference | 95% interval |", "|---|---:|---:|---:|---|"]
    for key, row in table.items():
        sign = " **above 0**" if row["low"] > 0 else (" **below 0**" if row["high"] < 0 else "")
        label = f"{key} ({CIRCULAR_NOTE})" if circular and key == "cosine" else key
        lines.append(f"| {label} | {row['baseline']:.4f} | {row['system']:.4f} | {row['difference']:+.4f} | "
                     f"({row['low']:+.4f}, {row['high']:+.4f}){sign} |")
    return lines


def _diversity_line(evaluated: list[dict], set_name: str) -> str | None:
    """Distinct-1/2 over all of a set's answers (one figure per system, so no interval), first and
    last evaluation of the run."""
    keys = (f"eval_{set_name}_distinct_1", f"eval_{set_name}_distinct_2")
    points = [r for r in evaluated if all(k in r for k in keys)]
    if len(points) < 2:
        return None
    first, last = points[0], points[-1]
    return (f"Distinct-1 / distinct-2 over the set's answers: iteration {first['iteration']} "
            f"{first[keys[0]]:.3f} / {first[keys[1]]:.3f}, iteration {last['iteration']} "
            f"{last[keys[0]]:.3f} / {last[keys[1]]:.3f}.")


def _plot_over_iterations(rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [r for r in rows if any(k.startswith("eval_") for k in r)]
    if not evaluated:
        return False
    sets = [name for name in SETS if f"eval_{name}_chrf" in evaluated[0]]
    keys = [k for k in PLOTTED if any(f"eval_{name}_{k}" in evaluated[0] for name in sets)]
    # the training-side signal: the reward model's score, or (no reward model; the ranker's rewards
    # are centred per prompt) the first signal the objective reports
    signal, title = ("reward_mean", "reward model score (trained on)")
    if not any(r.get("rm_accuracy") is not None for r in rows):
        signal, _, _, title = next((entry for entry in POLICY_SIGNALS
                                    if any(r.get(entry[0]) is not None for r in rows)), POLICY_SIGNALS[0])
    trained = [r for r in rows if r.get(signal) is not None]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4 * (len(keys) + 1), 3.2))
    for axis, key in zip(axes, keys):
        for name in sets:
            points = [(r["iteration"], r[f"eval_{name}_{key}"]) for r in evaluated if f"eval_{name}_{key}" in r]
            axis.plot(*zip(*points), marker="o", label=name)
        axis.set_title(key)
        axis.set_xlabel("iteration")
        axis.legend(fontsize="small")
    axes[-1].plot([r["iteration"] for r in trained], [r[signal] for r in trained], marker="o", color="C3")
    axes[-1].set_title(title)
    axes[-1].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _plot_lengths(answer_files: list[Path], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not answer_files:
        return False
    fig, axis = plt.subplots(figsize=(5, 3.2))
    for file in answer_files:
        system, _ = read_answers(file)
        axis.hist(system.lengths, bins=20, alpha=0.5, label=file.stem)
    axis.set_xlabel("answer tokens")
    axis.set_ylabel("answers")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_report(out_dir: Path, tables: dict[str, dict[str, dict]], agreement: dict, metrics_path: Path | None,
                 title: str = "Evaluation: trained, unseen and out-of-domain prompts",
                 notes: list[str] | None = None, circular: bool = False) -> Path:
    """tables: {system name: {set name: compare() table against the baseline}}. circular: the
    judge embedding is the ranker's own. Returns report.md's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(
        {"comparisons": tables, "agreement": agreement, "cosine_is_ranker_embedding": circular}, indent=2))
    rows = []
    if metrics_path is not None and metrics_path.exists():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    evaluated = [r for r in rows if any(k.startswith("eval_") for k in r)]
    lines = [f"# {title}", ""] + (notes or []) + [""]
    for name, per_set in tables.items():
        lines += [f"## {name} against the baseline", ""]
        for set_name, table in per_set.items():
            lines += [f"### {set_name}: {verdict(table, circular)}", ""] + _table_markdown(name, table, circular) + [""]
            diversity = _diversity_line(evaluated, set_name)
            lines += [diversity, ""] if diversity else []
    if agreement:
        lines += ["## Answer order agreement with the reference order", "",
                  f"{agreement['agreement_answers']} sampled answers for each of {agreement['agreement_prompts']} "
                  "held-out prompts, ordered by their judge similarity to the reference. Random full-order "
                  f"agreement: {agreement['agreement_random_full']:.4f} (the paper: 0.8333 DailyDialog, "
                  "0.6300 CornellMovie).", "",
                  "| orderer | full order | pairwise |", "|---|---:|---:|"]
        for who in ORDERERS:
            if f"{who}_full_order" in agreement:
                lines.append(f"| {who} | {agreement[f'{who}_full_order']:.4f} | {agreement[f'{who}_pairwise']:.4f} |")
        lines.append("")
    if _plot_over_iterations(rows, out_dir / "metrics_over_iterations.png"):
        lines += ["![held-out metrics over iterations](metrics_over_iterations.png)", ""]
    answer_dir = out_dir / "answers" / "unseen"
    files = sorted(answer_dir.glob("*.jsonl"), key=lambda p: _order_key(p.stem)) if answer_dir.exists() else []
    if _plot_lengths(files[:1] + files[-1:] if len(files) > 1 else files, out_dir / "answer_lengths.png"):
        lines += ["![answer lengths before and after](answer_lengths.png)", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _order_key(stem: str):
    """baseline first, then iter-N by N, then anything else by name."""
    if stem == "baseline":
        return (0, 0, stem)
    if stem.startswith("iter-") and stem[5:].isdigit():
        return (1, int(stem[5:]), stem)
    return (2, 0, stem)

