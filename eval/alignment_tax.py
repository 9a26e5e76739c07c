"""Alignment tax: how much general capability task training cost each checkpoint.

    python -m eval.alignment_tax --base smollm2-135m --tuned runs/grpo-mt runs/sft-mt
    python -m eval.alignment_tax --base MODEL [--tuned RUN_OR_CKPT ...] [--suite FILE] [--out DIR]

Each `--tuned` is a run folder (its latest checkpoint is used), a checkpoint
folder, or any name `load_model` accepts. Every benchmark of the suite
(`configs/alignment_suite.toml` by default) runs on the base model and on
each tuned model, and the tax of a checkpoint on a benchmark is

    tax = score(base) - score(tuned)        in points; positive = capability lost

with the average tax the mean over the benchmarks. Every drift probe compares
the tuned model with the base token by token on general text (`eval.drift`).
Without `--tuned` only the base model's scores are measured.

CMRC 2018, the paper's benchmark, is not shipped: put its dev file
(cmrc2018_dev.json, SQuAD-format JSON) at data/general/cmrc2018_dev.json, or
set `file` in the [cmrc] table of the suite to where it is. Until then the
probe is skipped with a note; with it, all its questions are scored (set
`max_examples` there for fewer) and the report gives EM, F1 and Avg.

Written into --out (default runs/alignment-tax):
    alignment_tax.md                    the tables printed at the end
    alignment_tax.json                  every number, per model and probe
    predictions/<model>/<probe>.jsonl   what each model answered
    drift_<probe>.npz                   per-token NLL increase and KL of each checkpoint
    nll_increase_<probe>.png, tax.png   plots, when matplotlib is installed
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from eval.drift import DriftResult, check_same_tokenizer, load_drift_texts
from eval.suite import DEFAULT_SUITE, Suite, load_suite
from grpo.run.checkpoint import latest_checkpoint
from grpo.run.errors import DataError, ModelError, UserError, exit_code_of
from grpo.run.models import BUILTIN_MODELS, DTYPES, TINY_MODEL, load_model, load_tokenizer

DEFAULT_OUT_DIR = Path("runs") / "alignment-tax"


def resolve_tuned(spec: str) -> str:
    """A run folder becomes its latest checkpoint; checkpoint folders and model names pass through."""
    run_dir = Path(spec)
    if (run_dir / "checkpoints").is_dir():
        latest = latest_checkpoint(run_dir)
        if latest is None:
            raise ModelError(f"run folder '{run_dir}' has no complete checkpoint under checkpoints/; "
                             "train until a checkpoint is saved or pass a checkpoint folder")
        return str(latest)
    return spec


def check_models(args) -> None:
    """Before any evaluation: every model name resolves, and each tuned model uses the base's tokenizer.

    Only tokenizers are loaded, so a mistake in the last --tuned costs seconds, not a whole base evaluation.
    """
    base_tokenizer = _tokenizer_of("--base", args.base, args.base)
    for spec in args.tuned:
        check_same_tokenizer(base_tokenizer, _tokenizer_of("--tuned", spec, resolve_tuned(spec)), spec)


def check_drift_texts(suite: Suite) -> None:
    """Before any evaluation: every drift probe has texts (an empty file was found only after both models' benchmarks)."""
    for name, probe in suite.drift.items():
        try:
            texts = load_drift_texts(probe.texts, probe.max_texts)
        except UserError as err:
            raise DataError(f"{suite.path}: drift probe [{name}]: {err}") from None
        if not texts:
            raise DataError(f"{suite.path}: drift probe [{name}]: no texts in '{probe.texts}'")


def _tokenizer_of(option: str, spec: str, resolved: str):
    try:
        return load_tokenizer(resolved)
    except ModelError:
        if Path(spec).exists() or spec in BUILTIN_MODELS or spec == TINY_MODEL:
            raise
        raise ModelError(f"{option} '{spec}' does not exist: it is not a folder, a builtin model name or a hub id "
                         "in the local cache") from None


def model_label(spec: str, resolved: str) -> str:
    """'runs/grpo-mt@step-000100' for a run folder, else the name as given."""
    return f"{spec.rstrip('/')}@{Path(resolved).name}" if resolved != spec else spec


def alignment_tax(base_score: float, tuned_score: float) -> float:
    """tax = score(base) - score(tuned), in the benchmark's points (positive = capability lost)."""
    return base_score - tuned_score


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate_benchmarks(model, tokenizer, suite: Suite, progress: bool) -> tuple[dict, dict]:
    """{probe: scores} and {probe: per-example rows} of every benchmark of the suite."""
    scores, rows = {}, {}
    for name, probe in suite.benchmarks.items():
        scores[name], rows[name] = probe.run(model, tokenizer, progress)
    return scores, rows


def headline_scores(suite: Suite, scores: dict) -> dict[str, float]:
    """Each benchmark's main number (accuracy, CMRC Avg) and their mean under 'average'."""
    headline = {name: float(scores[name][probe.score_key]) for name, probe in suite.benchmarks.items()}
    average = mean_or_none(list(headline.values()))
    return {**headline, "average": average} if average is not None else headline


def slug(label: str) -> str:
    """A file-system-safe folder name for a model label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def write_rows(out_dir: Path, label: str, rows: dict[str, list[dict]]) -> None:
    folder = out_dir / "predictions" / slug(label)
    folder.mkdir(parents=True, exist_ok=True)
    for probe, probe_rows in rows.items():
        with open(folder / f"{probe}.jsonl", "w", encoding="utf-8") as f:
            for row in probe_rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def free(model) -> None:
    """Release a model's memory before the next one loads."""
    device = next(model.parameters()).device
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(args, suite: Suite, out_dir: Path) -> tuple[dict, dict[str, dict[str, DriftResult]]]:
    """Run the suite on the base and every tuned model: the report and the drift results per probe and model."""
    progress = not args.quiet
    print(f"base model {args.base}")
    base_model, base_tokenizer = load_model(args.base, dtype=args.dtype, device=args.device)
    base_model.eval()
    base_scores, base_rows = evaluate_benchmarks(base_model, base_tokenizer, suite, progress)
    write_rows(out_dir, f"base-{args.base}", base_rows)
    report = {
        "suite": str(suite.path),
        "skipped": suite.skipped,
        "base": {"label": args.base, "scores": base_scores, "headline": headline_scores(suite, base_scores)},
        "tuned": [],
    }
    drift_results: dict[str, dict[str, DriftResult]] = {name: {} for name in suite.drift}
    for spec in args.tuned:
        resolved = resolve_tuned(spec)
        label = model_label(spec, resolved)
        print(f"tuned model {label}")
        tuned_model, tuned_tokenizer = load_model(resolved, dtype=args.dtype, device=args.device)
        tuned_model.eval()
        scores, rows = evaluate_benchmarks(tuned_model, tuned_tokenizer, suite, progress)
        write_rows(out_dir, label, rows)
        headline = headline_scores(suite, scores)
        entry = {
            "label": label, "path": resolved, "scores": scores, "headline": headline,
            "tax": {name: alignment_tax(report["base"]["headline"][name], score) for name, score in headline.items()},
            "drift": {},
        }
        for name, probe in suite.drift.items():
            result = probe.run(base_model, tuned_model, base_tokenizer, progress)
            drift_results[name][label] = result
            entry["drift"][name] = result.summary()
        report["tuned"].append(entry)
        free(tuned_model)
    return report, drift_results


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def _number(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_report(report: dict, suite: Suite) -> str:
    """The score, tax and drift tables as Markdown."""
    benchmarks = list(suite.benchmarks)
    lines = ["# Alignment tax", "", f"Suite `{report['suite']}`, base model `{report['base']['label']}`.", ""]
    if benchmarks:
        columns = benchmarks + ["average"]
        header = "| " + " | ".join(
            [f"{name} ({suite.benchmarks[name].score_key})" for name in benchmarks] + ["average"]) + " |"
        rule = "| --- |" + " ---: |" * len(columns)
        lines += ["## Scores (percent, higher is better)", "", "| model " + header, rule]
        for label, headline in [("base: " + report["base"]["label"], report["base"]["headline"])] + [
            (entry["label"], entry["headline"]) for entry in report["tuned"]
        ]:
            lines.append(f"| {label} | " + " | ".join(_number(headline.get(c)) for c in columns) + " |")
        if report["tuned"]:
            lines += ["", "## Alignment tax (base - tuned, points; positive = capability lost)", "",
                      "| checkpoint | " + " | ".join(columns) + " |", rule]
            for entry in report["tuned"]:
                lines.append(f"| {entry['label']} | " + " | ".join(_number(entry["tax"].get(c), signed=True)
                                                                   for c in columns) + " |")
        lines.append("")
    for name, probe in suite.benchmarks.items():
        keys = probe.report_keys
        lines += [f"## {name}: every score", "", "| model | " + " | ".join(keys) + " |",
                  "| --- |" + " ---: |" * len(keys)]
        for label, scores in [("base: " + report["base"]["label"], report["base"]["scores"][name])] + [
            (entry["label"], entry["scores"][name]) for entry in report["tuned"]
        ]:
            cells = [str(scores[key]) if key == "n" else _number(scores.get(key)) for key in keys]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    for name in suite.drift if report["tuned"] else []:
        lines += [f"## Drift from the base on general text ({name}; nats per token)", "",
                  "| checkpoint | mean NLL increase | p90 NLL increase | mean KL | p90 KL | tokens |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for entry in report["tuned"]:
            d = entry["drift"][name]
            lines.append(f"| {entry['label']} | {_number(d['nll_increase_mean'], True, 3)} | "
                         f"{_number(d['nll_increase_p90'], True, 3)} | {_number(d['kl_mean'], digits=4)} | "
                         f"{_number(d['kl_p90'], digits=4)} | {d['tokens']} |")
        lines.append("")
    if suite.drift and not report["tuned"]:
        lines.append(f"Drift probes {', '.join(f'`{name}`' for name in suite.drift)} not run: they compare "
                     "a tuned model with the base (--tuned).")
    for name, why in report["skipped"].items():
        lines.append(f"Skipped probe `{name}`: {why}.")
    return "\n".join(lines).rstrip() + "\n"


def write_drift_arrays(out_dir: Path, drift_results: dict[str, dict[str, DriftResult]]) -> None:
    """drift_<probe>.npz: for each checkpoint label, its per-token NLL increase and KL arrays."""
    for name, by_label in drift_results.items():
        if not by_label:
            continue
        arrays = {}
        for label, result in by_label.items():
            arrays[f"{slug(label)}__nll_increase"] = result.nll_increase
            arrays[f"{slug(label)}__kl"] = result.kl
        np.savez_compressed(out_dir / f"drift_{name}.npz", **arrays)


def write_plots(out_dir: Path, report: dict, suite: Suite, drift_results: dict[str, dict[str, DriftResult]]) -> str:
    """Histograms of the per-token NLL increase and a bar chart of the tax; returns a note on what was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return "plots skipped: matplotlib is not installed (pip install matplotlib)"
    written = []
    for name, by_label in drift_results.items():
        if not by_label:
            continue
        figure, axes = plt.subplots(figsize=(7, 4))
        for label, result in by_label.items():
            axes.hist(result.nll_increase, bins=60, histtype="step", linewidth=1.5, label=label)
        axes.axvline(0.0, color="grey", linewidth=0.8)
        axes.set_xlabel("per-token NLL increase, tuned - base (nats)")
        axes.set_ylabel("tokens")
        axes.set_title(f"Per-token drift from the base (probe {name})")
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(out_dir / f"nll_increase_{name}.png", dpi=120)
        plt.close(figure)
        written.append(f"nll_increase_{name}.png")
    if suite.benchmarks and report["tuned"]:
        columns = list(suite.benchmarks) + ["average"]
        width = 0.8 / len(report["tuned"])
        figure, axes = plt.subplots(figsize=(max(5, 1.5 * len(columns)), 4))
        for index, entry in enumerate(report["tuned"]):
            positions = np.arange(len(columns)) + index * width
            axes.bar(positions, [entry["tax"][c] for c in columns], width, label=entry["label"])
        axes.axhline(0.0, color="grey", linewidth=0.8)
        axes.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns)
        axes.set_ylabel("alignment tax (base - tuned, points)")
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(out_dir / "tax.png", dpi=120)
        plt.close(figure)
        written.append("tax.png")
    return "plots: " + ", ".join(written) if written else "no plots (they need a tuned model and a drift probe or benchmark)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m eval.alignment_tax", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--base", required=True, help="the model before task training (name or folder)")
    parser.add_argument("--tuned", nargs="*", default=[],
                        help="run folders, checkpoint folders or model names (none: score the base model alone)")
    parser.add_argument("--suite", default=str(DEFAULT_SUITE), help=f"suite file (default: {DEFAULT_SUITE})")
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help=f"output folder (default: {DEFAULT_OUT_DIR})")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return exit_code_of(lambda: measure_and_write(args))


def measure_and_write(args) -> None:
    """Measure the suite, then write and print the table, the JSON report, the drift arrays and the plots."""
    suite = load_suite(args.suite)
    check_models(args)
    if args.tuned:  # drift compares a tuned model with the base
        check_drift_texts(suite)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report, drift_results = measure(args, suite, out_dir)
    table = markdown_report(report, suite)
    (out_dir / "alignment_tax.md").write_text(table, encoding="utf-8")
    (out_dir / "alignment_tax.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    write_drift_arrays(out_dir, drift_results)
    note = write_plots(out_dir, report, suite, drift_results)
    print("\n" + table)
    print(f"{note}\nwritten to {out_dir}")


if __name__ == "__main__":
    sys.exit(main())
