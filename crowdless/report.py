"""RUN/eval/: metrics.json (every figure), report.md (the tables a person reads) and PNG plots.

    metrics_over_iterations.png   held-out metrics per iteration beside the reward model's score (or,
                                  without one, the objective's own training signal: POLICY_SIGNALS)
    answer_lengths.png            answer-length distribution of the baseline and the last system
"""

from __future__ import annotations

import json
from pathlib import Path

from crowdless.evaluation import ORDERERS, read_answers

# What each policy objective reports about its own training, as metrics.jsonl names it:
# (key, console label, digits, plot title). The policy-gradient objectives report the KL to the
# reference; dpo the share of its pairs whose implicit reward orders them right, and the margin;
# listwise the share of its lists whose best answer it scores highest; each the share of the
# policy's weights that moved (in bf16 a short run can leave most where they were).
POLICY_SIGNALS = (
    ("kl", "kl", 4, "KL to the reference (trained)"),
    ("reward_accuracy", "pair_acc", 2, "pairs ordered right by the policy (trained)"),
    ("reward_margin", "margin", 3, "DPO implicit reward margin (trained)"),
    ("top1_accuracy", "top1", 2, "lists whose best answer scores highest (trained)"),
    ("policy_weights_moved", "moved", 2, "share of the policy's weights changed from the start"),
)


def _table_markdown(name: str, table: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"| metric | baseline | {name} | difference | 95% interval |", "|---|---:|---:|---:|---|"]
    for key, row in table.items():
        sign = " **above 0**" if row["low"] > 0 else (" **below 0**" if row["high"] < 0 else "")
        lines.append(f"| {key} | {row['baseline']:.4f} | {row['system']:.4f} | {row['difference']:+.4f} | "
                     f"({row['low']:+.4f}, {row['high']:+.4f}){sign} |")
    return lines


def _plot_over_iterations(rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [r for r in rows if "eval_cosine" in r]
    if not evaluated:
        return False
    keys = [k for k in ("eval_cosine", "eval_chrf", "eval_bleu", "eval_meteor", "eval_meteor_nosyn")
            if k in evaluated[0]]
    # the training-side signal: the reward model's score, or (no reward model; the ranker's rewards
    # are centred per prompt) the first signal the objective reports
    signal, title = ("reward_mean", "reward model score (trained on)")
    if not any(r.get("rm_accuracy") is not None for r in rows):
        signal, _, _, title = next((entry for entry in POLICY_SIGNALS
                                    if any(r.get(entry[0]) is not None for r in rows)), POLICY_SIGNALS[0])
    trained = [r for r in rows if r.get(signal) is not None]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4 * (len(keys) + 1), 3.2))
    for axis, key in zip(axes, keys):
        axis.plot([r["iteration"] for r in evaluated], [r[key] for r in evaluated], marker="o")
        axis.set_title(f"held-out {key[5:]}")
        axis.set_xlabel("iteration")
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


def write_report(out_dir: Path, tables: dict[str, dict], agreement: dict, metrics_path: Path | None,
                 title: str = "Held-out evaluation", notes: list[str] | None = None) -> Path:
    """tables: {system name: compare() table against the baseline}. Returns report.md's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"comparisons": tables, "agreement": agreement},
                                                     indent=2))
    lines = [f"# {title}", ""] + (notes or []) + [""]
    for name, table in tables.items():
        lines += [f"## {name} against the baseline", ""] + _table_markdown(name, table) + [""]
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
    rows = []
    if metrics_path is not None and metrics_path.exists():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    if _plot_over_iterations(rows, out_dir / "metrics_over_iterations.png"):
        lines += ["![held-out metrics over iterations](metrics_over_iterations.png)", ""]
    answer_dir = out_dir / "answers"
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

