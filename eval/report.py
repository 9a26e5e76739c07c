"""The reproduction's numbers from its measurements: intervals, frontiers, the forgetting law, the headline.

Reads `<results>/measurements/<task>/*.json` (written by `eval.reproduce`) and
writes `<results>/summary.json`, `summary.md` and the plots. Every interval is
95%: over test items by a paired bootstrap (the same items under both models),
or over seeds by Student's t.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eval.stats import bootstrap_mean_ci, frontier_at, r_squared, seed_mean_ci, upper_frontier

ARM_COLOURS = {"sft": "tab:blue", "grpo": "tab:orange"}


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------
def load_measurements(folder: Path) -> dict[str, dict]:
    """label -> measurement, for every JSON file in `folder` and its headline/ subfolder."""
    measurements = {}
    for path in sorted(folder.glob("*.json")) + sorted((folder / "headline").glob("*.json")):
        if path.name == "pair.json":
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        measurements[data["label"]] = data
    return measurements


def arm_of(label: str) -> str | None:
    """Which frontier a checkpoint belongs to: SFT, or GRPO (its cold start included); None otherwise."""
    if label.startswith("sft-"):
        return "sft"
    if label.startswith(("grpo-mt", "grpo-hg", "cold-start-")):
        return "grpo"
    return None


def run_and_step(label: str) -> tuple[str, int]:
    name, _, step = label.partition("@")
    return name, int(step) if step else 0


# --------------------------------------------------------------------------
# Gains and capability against the base, with intervals over items
# --------------------------------------------------------------------------
def paired_change(measurement: dict, base: dict, probe: str, key: str, scale: float = 1.0) -> dict:
    """Mean of (checkpoint - base) over the probe's items, with its bootstrap interval, times `scale`."""
    difference = scale * (np.asarray(measurement[probe][key]) - np.asarray(base[probe][key]))
    mean, low, high = bootstrap_mean_ci(difference)
    return {"mean": mean, "low": low, "high": high}


def checkpoint_row(measurement: dict, base: dict, score: str) -> dict:
    """The numbers one checkpoint contributes: task gain, capability change, the KLs."""
    return {
        "label": measurement["label"],
        "arm": arm_of(measurement["label"]),
        "task_score": float(np.mean(measurement["task"][score])),
        "gain": paired_change(measurement, base, "task", score),
        "embedding_sim": float(np.mean(measurement["task"]["embedding_sim"])),
        "cloze": 100.0 * float(np.mean(measurement["cloze"]["correct"])),
        "cloze_change": paired_change(measurement, base, "cloze", "correct", scale=100.0),
        # The smooth companion of accuracy: change of log p(target word | passage), nats per item.
        "cloze_logprob_change": paired_change(measurement, base, "cloze", "target_logprob"),
        "task_kl_forward": float(np.mean(measurement["task_kl"]["forward"])),
        "task_kl_reverse": float(np.mean(measurement["task_kl"]["reverse"])),
        "drift": measurement["drift"],
    }


def matched_pair(measurements: dict[str, dict], score: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """The GRPO checkpoint of largest task gain, and the SFT checkpoint whose gain is closest to it."""
    base = measurements["base"]
    rows = [checkpoint_row(m, base, score) for label, m in measurements.items()
            if "@" in label and arm_of(label) in ("sft", "grpo")]
    grpo = max((r for r in rows if r["arm"] == "grpo"), key=lambda r: r["gain"]["mean"])
    sft = min((r for r in rows if r["arm"] == "sft"), key=lambda r: abs(r["gain"]["mean"] - grpo["gain"]["mean"]))
    return run_and_step(sft["label"]), run_and_step(grpo["label"])


def frontier_comparison(rows: list[dict], points: int = 5, capability: str = "cloze_change") -> dict:
    """GRPO's frontier minus SFT's in capability change, at matched gains over their common range.

    Each arm's frontier is its Pareto-upper set of (gain, capability change), held flat down to
    the arm's smallest gain; the comparison is read at `points` evenly spaced gains where both
    frontiers are defined.
    """
    frontiers = {arm: upper_frontier([(r["gain"]["mean"], r[capability]["mean"]) for r in rows if r["arm"] == arm])
                 for arm in ("sft", "grpo")}
    # Each frontier reaches down to its arm's smallest gain (frontier_at's lowest_x).
    lowest = {arm: min(r["gain"]["mean"] for r in rows if r["arm"] == arm) for arm in frontiers}
    low = max(lowest.values())
    high = min(frontier[-1][0] for frontier in frontiers.values())
    if low > high:
        return {"overlap": None, "frontiers": frontiers}
    gains = np.linspace(low, high, points) if high > low else np.array([low])
    differences = [frontier_at(frontiers["grpo"], g, lowest["grpo"]) - frontier_at(frontiers["sft"], g, lowest["sft"])
                   for g in gains]
    return {"overlap": [low, high], "gains": gains.tolist(), "grpo_minus_sft": differences,
            "mean_grpo_minus_sft": float(np.mean(differences)), "frontiers": frontiers}


def forgetting_law(rows: list[dict], capability: str = "cloze_change") -> dict:
    """R² of the capability drop against each KL, pooled over both arms (linear and quadratic fits).

    `capability` is the row's change to explain: "cloze_change" (accuracy points) or
    "cloze_logprob_change" (the target word's log-likelihood, nats).
    """
    drop = [-r[capability]["mean"] for r in rows]
    predictors = {
        "task_kl_forward": [r["task_kl_forward"] for r in rows],     # E_task KL(base || tuned): RL's Razor
        "task_kl_reverse": [r["task_kl_reverse"] for r in rows],     # E_task KL(tuned || base)
        "general_kl": [r["drift"]["kl_mean"] for r in rows],          # KL(tuned || base) on general text
    }
    law = {"points": len(rows), "capability": capability}
    for name, values in predictors.items():
        law[name] = {"r2_linear": r_squared(values, drop, 1), "r2_quadratic": r_squared(values, drop, 2)}
    return law


# --------------------------------------------------------------------------
# The headline: matched pair at several seeds
# --------------------------------------------------------------------------
def headline(measurements: dict[str, dict], score: str) -> dict:
    """Per arm: each metric's mean over seeds with its t interval, and seed 0's item-bootstrap intervals."""
    base = measurements.get("headline/base")
    if base is None:
        return {}
    table = {}
    for arm in ("sft", "grpo"):
        seeds = sorted(label for label in measurements if label.startswith(f"headline/{arm}-s"))
        per_seed = [measurements[label] for label in seeds]
        metrics = {
            "task_score": [float(np.mean(m["task"][score])) for m in per_seed],
            "gain": [float(np.mean(np.asarray(m["task"][score]) - base["task"][score])) for m in per_seed],
            "embedding_sim": [float(np.mean(m["task"]["embedding_sim"])) for m in per_seed],
            "cloze": [100.0 * float(np.mean(m["cloze"]["correct"])) for m in per_seed],
            "mmlu": [100.0 * float(np.mean(m["mmlu"]["correct"])) for m in per_seed if "mmlu" in m],
            "nll_increase_mean": [m["drift"]["nll_increase_mean"] for m in per_seed],
            "nll_increase_p90": [m["drift"]["nll_increase_p90"] for m in per_seed],
            "kl_p90": [m["drift"]["kl_p90"] for m in per_seed],
            "task_kl_forward": [float(np.mean(m["task_kl"]["forward"])) for m in per_seed],
        }
        table[arm] = {"seeds": len(per_seed),
                      **{key: dict(zip(("mean", "low", "high"), seed_mean_ci(values)))
                         for key, values in metrics.items() if values}}
        first = per_seed[0]
        table[arm]["seed0_gain_items"] = paired_change(first, base, "task", score)
        table[arm]["seed0_cloze_change_items"] = paired_change(first, base, "cloze", "correct", 100.0)
        if "mmlu" in first:
            table[arm]["seed0_mmlu_change_items"] = paired_change(first, base, "mmlu", "correct", 100.0)
    table["base"] = {"task_score": float(np.mean(base["task"][score])),
                     "cloze": 100.0 * float(np.mean(base["cloze"]["correct"])),
                     "cloze_items": bootstrap_mean_ci(100.0 * np.asarray(base["cloze"]["correct"])),
                     **({"mmlu": 100.0 * float(np.mean(base["mmlu"]["correct"])),
                         "mmlu_items": bootstrap_mean_ci(100.0 * np.asarray(base["mmlu"]["correct"]))}
                        if "mmlu" in base else {})}
    return table


def bleu_ablation(measurements: dict[str, dict]) -> dict | None:
    """Embedding similarity of the BLEU-reward arm against the semantic arm at the same lr and step."""
    bleu = [label for label in measurements if label.startswith("grpo-bleu-mt")]
    if not bleu:
        return None
    semantic = bleu[0].replace("grpo-bleu-mt", "grpo-mt")
    if semantic not in measurements:
        return None
    a, b = measurements[semantic]["task"]["embedding_sim"], measurements[bleu[0]]["task"]["embedding_sim"]
    mean, low, high = bootstrap_mean_ci(np.asarray(a) - np.asarray(b))
    return {"semantic": semantic, "bleu": bleu[0], "semantic_embedding_sim": float(np.mean(a)),
            "bleu_embedding_sim": float(np.mean(b)), "difference": {"mean": mean, "low": low, "high": high}}


# --------------------------------------------------------------------------
# Plots and the written summary
# --------------------------------------------------------------------------
# The capability measures of a checkpoint row: what each is, its unit, the digits it is written
# with, and the suffix of its frontier and forgetting-law keys in summary.json.
CAPABILITIES = {"cloze_change": ("cloze accuracy", "points", 1, ""),
                "cloze_logprob_change": ("cloze log-likelihood", "nats / item", 3, "_logprob")}


def plot_frontier(rows: list[dict], comparisons: dict[str, dict], task: str, score: str, path: Path) -> None:
    """Capability change against task gain, one panel per capability in `comparisons`, every run a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(comparisons), figsize=(6.5 * len(comparisons), 4.8), squeeze=False)
    for axis, (capability, comparison) in zip(axes[0], comparisons.items()):
        for arm in ("sft", "grpo"):
            arm_rows = [r for r in rows if r["arm"] == arm]
            runs = sorted({run_and_step(r["label"])[0] for r in arm_rows})
            for index, run in enumerate(runs):
                run_rows = sorted((r for r in arm_rows if run_and_step(r["label"])[0] == run),
                                  key=lambda r: run_and_step(r["label"])[1])
                x = [r["gain"]["mean"] for r in run_rows]
                y = [r[capability]["mean"] for r in run_rows]
                xerr = [[r["gain"]["mean"] - r["gain"]["low"] for r in run_rows],
                        [r["gain"]["high"] - r["gain"]["mean"] for r in run_rows]]
                yerr = [[r[capability]["mean"] - r[capability]["low"] for r in run_rows],
                        [r[capability]["high"] - r[capability]["mean"] for r in run_rows]]
                axis.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="os^v"[index % 4] + "-", color=ARM_COLOURS[arm],
                              alpha=0.8, capsize=2, label=run, markersize=5, linewidth=1)
            frontier = comparison["frontiers"][arm]
            axis.plot([p[0] for p in frontier], [p[1] for p in frontier], color=ARM_COLOURS[arm], linewidth=3,
                      alpha=0.35)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xlabel(f"task gain over the base ({score}, test split)")
        what, unit, _, _ = CAPABILITIES[capability]
        axis.set_ylabel(f"{what} change ({unit})")
        axis.set_title(f"{task.upper()}: capability against task gain (95% item-bootstrap bars)", fontsize=10)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_forgetting_law(rows_by_task: dict[str, list[dict]], laws: dict[str, dict[str, dict]], path: Path) -> None:
    """Capability drop (rows: cloze accuracy, cloze log-likelihood) against each KL (columns), every
    checkpoint a point; `laws[task][capability]` is that task's `forgetting_law` fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predictors = [("task_kl_forward", "KL(base ‖ tuned) on task prompts, base samples (nats / response)"),
                  ("general_kl", "KL(tuned ‖ base) on general text (nats / token)")]
    figure, axes = plt.subplots(len(CAPABILITIES), 2, figsize=(12, 4.25 * len(CAPABILITIES)), squeeze=False)
    markers = {"mt": "o", "hg": "s"}
    for row_axes, (capability, (what, unit, _, _)) in zip(axes, CAPABILITIES.items()):
        y_title = f"{what} drop ({unit})"
        for axis, (key, x_title) in zip(row_axes, predictors):
            for task, rows in rows_by_task.items():
                r2 = laws[task][capability][key]["r2_linear"]
                for arm in ("sft", "grpo"):
                    arm_rows = [r for r in rows if r["arm"] == arm]
                    x = [r[key] if key != "general_kl" else r["drift"]["kl_mean"] for r in arm_rows]
                    y = [-r[capability]["mean"] for r in arm_rows]
                    axis.scatter(x, y, color=ARM_COLOURS[arm], marker=markers.get(task, "o"),
                                 label=f"{task} {arm}" + (f" (task's R² {r2:.2f})" if arm == "sft" else ""))
            axis.axhline(0.0, color="grey", linewidth=0.8)
            axis.set_xlabel(x_title)
            axis.set_ylabel(y_title)
            axis.legend(fontsize=7, title="R²: linear fit, both arms pooled", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _interval(value: dict, digits: int = 3) -> str:
    return f"{value['mean']:+.{digits}f} [{value['low']:+.{digits}f}, {value['high']:+.{digits}f}]"


def write_report(results: Path, tasks: list[str], task_score: dict[str, str]) -> dict:
    """summary.json, summary.md and the plots from `results`/measurements, for each task that has a base.

    The capability on every frontier and in every law is the same cloze probe, so with two tasks
    the forgetting law is also fitted to their checkpoints pooled, as RL's Razor pools its tasks.
    """
    summary: dict = {"tasks": {}}
    rows_by_task, laws, lines = {}, {}, ["# Reproduction summary (generated by `python -m eval.reproduce --stage report`)", ""]
    for task in tasks:
        measurements = load_measurements(results / "measurements" / task)
        if "base" not in measurements:
            lines += [f"{task}: no measurements yet", ""]
            continue
        score = task_score[task]
        base = measurements["base"]
        rows = [checkpoint_row(m, base, score) for label, m in measurements.items()
                if not label.startswith("headline/") and label != "base" and arm_of(label)]
        rows_by_task[task] = rows
        both_arms = {r["arm"] for r in rows} == {"sft", "grpo"}
        comparisons = {c: frontier_comparison(rows, capability=c) if both_arms else {} for c in CAPABILITIES}
        laws[task] = {c: forgetting_law(rows, c) if len(rows) > 3 else {} for c in CAPABILITIES}
        task_summary = {"score": score, "base_task_score": float(np.mean(base["task"][score])),
                        "base_cloze": bootstrap_mean_ci(100.0 * np.asarray(base["cloze"]["correct"])),
                        "checkpoints": rows,
                        **{f"frontier{CAPABILITIES[c][3]}": comparisons[c] for c in CAPABILITIES},
                        **{f"forgetting_law{CAPABILITIES[c][3]}": laws[task][c] for c in CAPABILITIES},
                        "headline": headline(measurements, score), "bleu_ablation": bleu_ablation(measurements)}
        summary["tasks"][task] = task_summary
        if both_arms:
            plot_frontier(rows, comparisons, task, score, results / f"frontier_{task}.png")
        lines += [f"## {task.upper()} (task score: {score}; base {task_summary['base_task_score']:.3f}; base cloze "
                  f"{task_summary['base_cloze'][0]:.1f} [{task_summary['base_cloze'][1]:.1f}, "
                  f"{task_summary['base_cloze'][2]:.1f}])", "",
                  "| checkpoint | arm | task gain [95% CI] | emb. sim | cloze change, points [95% CI] | "
                  "cloze log p change, nats [95% CI] | task KL(base‖tuned) | general KL(tuned‖base) | "
                  "mean NLL incr. |",
                  "| --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: |"]
        for r in sorted(rows, key=lambda r: (r["arm"], r["label"])):
            lines.append(f"| {r['label']} | {r['arm']} | {_interval(r['gain'])} | {r['embedding_sim']:.3f} | "
                         f"{_interval(r['cloze_change'], 1)} | {_interval(r['cloze_logprob_change'], 3)} | "
                         f"{r['task_kl_forward']:.3f} | {r['drift']['kl_mean']:.4f} | "
                         f"{r['drift']['nll_increase_mean']:+.3f} |")
        for capability, compared in comparisons.items():
            what, unit, digits, _ = CAPABILITIES[capability]
            if compared.get("overlap"):
                lines += ["", f"Frontiers at matched gain ({compared['overlap'][0]:.3f} to {compared['overlap'][1]:.3f}):"
                          f" GRPO minus SFT in {what} ({unit}) = {compared['mean_grpo_minus_sft']:+.{digits + 1}f} on average "
                          f"({', '.join(f'{d:+.{digits}f}' for d in compared['grpo_minus_sft'])})."]
            elif compared:
                lines += ["", "The two frontiers' gain ranges do not overlap: no matched-gain comparison."]
        for capability, fits in laws[task].items():
            if fits:
                lines += ["", f"Forgetting law (R² of the {CAPABILITIES[capability][0]} drop, both arms pooled, "
                          f"{fits['points']} checkpoints): " + ", ".join(
                              f"{name} {fit['r2_linear']:.2f} (quadratic {fit['r2_quadratic']:.2f})"
                              for name, fit in fits.items() if name not in ("points", "capability"))]
        lines.append("")
    fitted = {task: task_laws for task, task_laws in laws.items() if all(task_laws.values())}
    if len(fitted) > 1:
        pooled_rows = [row for task in fitted for row in rows_by_task[task]]
        summary["forgetting_law_pooled"] = {c: forgetting_law(pooled_rows, c) for c in CAPABILITIES}
        for capability, fits in summary["forgetting_law_pooled"].items():
            lines += [f"Forgetting law, {' and '.join(fitted)} pooled (R² of the {CAPABILITIES[capability][0]} drop, "
                      f"{fits['points']} checkpoints): " + ", ".join(
                          f"{name} {fit['r2_linear']:.2f} (quadratic {fit['r2_quadratic']:.2f})"
                          for name, fit in fits.items() if name not in ("points", "capability")), ""]
    if fitted:
        plot_forgetting_law({t: rows_by_task[t] for t in fitted}, fitted, results / "forgetting_law.png")
    (results / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    (results / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return summary
