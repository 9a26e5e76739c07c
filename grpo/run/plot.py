"""Run plots: `python -m grpo.run.plot RUN_DIR [RUN_DIR ...] [--out PNG]`.

One PNG with the curves people look at, read from each run's metrics.jsonl:
train reward (total and per term), dev reward, KL, entropy, completion
lengths, clip ratios, gradient norm and frac_reward_zero_std for GRPO, and
train and dev loss for SFT. Several runs overlay, one colour per run, for
comparison; a panel appears when some run logged its metric.

    python -m grpo.run.plot runs/grpo-mt                      # writes runs/grpo-mt/curves.png
    python -m grpo.run.plot runs/grpo-mt runs/grpo-bleu-mt --out runs/mt-rewards.png
    make plot RUN=runs/grpo-mt
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from grpo.run.errors import UserError, exit_code_of
from grpo.run.metrics import read_metrics

# (title, metric names drawn in the panel); dev metrics are drawn with markers.
PANELS = [
    ("train reward (total)", ["reward"]),
    ("dev reward", ["eval/reward"]),
    ("KL to the reference", ["kl"]),
    ("entropy", ["entropy"]),
    ("completion length (tokens)", ["completions/mean_length", "completions/max_length"]),
    ("clip ratios", ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                     "clip_ratio/delta_mean"]),
    ("grad norm (before clipping)", ["grad_norm"]),
    ("frac_reward_zero_std", ["frac_reward_zero_std"]),
    ("dynamic sampling: fraction of groups dropped", ["dynamic_sampling/frac_dropped"]),
    ("train loss", ["loss"]),
    ("dev loss", ["eval/loss"]),
]
LINE_STYLES = ("-", "--", ":", "-.")
COLUMNS = 4


def reward_term_panels(runs: dict[str, list[dict]]) -> list[tuple[str, list[str]]]:
    """One panel per reward term any run logged (rewards/<term>/mean), after the total."""
    terms = sorted({key[len("rewards/"):-len("/mean")] for rows in runs.values() for row in rows for key in row
                    if key.startswith("rewards/") and key.endswith("/mean")})
    return [(f"reward term: {term}", [f"rewards/{term}/mean"]) for term in terms]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric; a null (non-finite) value becomes a gap."""
    points = [(row["step"], row[key]) for row in rows if key in row]
    return [step for step, _ in points], [math.nan if value is None else value for _, value in points]


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Folder names, or whole paths where two runs share a name."""
    names = [path.name for path in run_dirs]
    return [name if names.count(name) == 1 else str(path) for name, path in zip(names, run_dirs)]


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Draw the panels of every run into one PNG at `out`; returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UserError('plots need matplotlib: pip install -e ".[plots]" (or pip install matplotlib)') from None
    run_dirs = [Path(path) for path in run_dirs]
    runs = {}
    for label, path in zip(run_labels(run_dirs), run_dirs):
        if not (path / "metrics.jsonl").is_file():
            raise UserError(f"run folder '{path}' has no metrics.jsonl; give the out_dir of a GRPO or SFT run")
        runs[label] = read_metrics(path / "metrics.jsonl")

    panels = [PANELS[0], *reward_term_panels(runs), *PANELS[1:]]
    panels = [(title, keys) for title, keys in panels if any(key in row for rows in runs.values()
                                                             for row in rows for key in keys)]
    if not panels:
        raise UserError(f"no metric to plot in {', '.join(map(str, run_dirs))}")
    rows_of_panels = math.ceil(len(panels) / COLUMNS)
    columns = min(COLUMNS, len(panels))
    figure, axes = plt.subplots(rows_of_panels, columns, figsize=(4.6 * columns, 3.3 * rows_of_panels),
                                squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (title, keys) in zip(axes.flat, panels):
        for run_index, (label, rows) in enumerate(runs.items()):
            for style, key in zip(LINE_STYLES, keys):
                steps, values = series(rows, key)
                if not steps:
                    continue
                name = label if len(keys) == 1 else f"{label}: {key.split('/')[-1]}"
                axis.plot(steps, values, style, color=colours[run_index % len(colours)], label=name,
                          marker="o" if key.startswith("eval/") else None, markersize=4, linewidth=1.4)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
        if len(runs) > 1 or len(keys) > 1:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.suptitle("  vs  ".join(runs), fontsize=11)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (each with a metrics.jsonl)")
    parser.add_argument("--out", help="the PNG to write (default: curves.png in the first run folder)")
    args = parser.parse_args(argv)
    return exit_code_of(lambda: print(f"wrote {plot_runs(args.runs, args.out or Path(args.runs[0]) / 'curves.png')}"))


if __name__ == "__main__":
    sys.exit(main())
