"""The paper's comparison on the offline defaults, stage by stage: `python -m eval.reproduce`.

Arms, all from SmolLM2-135M-Instruct with LoRA (r 64, alpha 128) on the same
prompts, with optimizer-step budgets of the same size:

    base                 the untouched model
    sft-<task>           strong SFT: one epoch over all the task data
    grpo-<task>          cold-start SFT (a small subset, 2 epochs), then GRPO
                         with R = 1.5 R_sim + 1.0 R_lang from that checkpoint
    grpo-bleu-mt         the paper's ablation: the same cold start, then GRPO
                         with R = 1.5 BLEU + 1.0 R_lang

then the task metrics of every arm on the test split, and the alignment tax
(`eval.alignment_tax`) of every arm against the base model.

A stage whose output exists is skipped, so an interrupted run continues
where it stopped: run the same command again. Everything lands in --out
(default runs/reproduce); `summary.json` and `summary.md` hold the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
TASKS = {
    "mt": {"grpo": "configs/mt.toml", "sft": "configs/sft_mt.toml", "cold_start": "configs/cold_start_mt.toml"},
    "hg": {"grpo": "configs/hg.toml", "sft": "configs/sft_hg.toml", "cold_start": "configs/cold_start_hg.toml"},
}
# GRPO on LoRA adapters, like the SFT arms; 30 steps of 2 prompts x 8 completions.
GRPO_ARGS = ["lora_r=64", "lora_alpha=128.0", "lora_dropout=0.05", "lr=1e-4", "max_steps=30", "eval_every=10",
             "keep_checkpoints=1"]
BLEU_REWARD = "reward_weights={bleu=1.5,language=1.0}"


def run_stage(name: str, done: Path, command: list[str], log_dir: Path, timings: dict) -> None:
    """Run `command` unless `done` exists; its output goes to <log_dir>/<name>.log."""
    if done.exists():
        print(f"[skip] {name}: {done} exists")
        return
    print(f"[run]  {name}: {' '.join(command)}", flush=True)
    start = time.time()
    with open(log_dir / f"{name}.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        raise SystemExit(f"stage {name} failed (exit {result.returncode}); see {log_dir / (name + '.log')}")
    timings[name] = round(time.time() - start, 1)
    print(f"[done] {name} in {timings[name]:.0f} s", flush=True)


def test_metrics(model: str, task: str, out_file: Path, limit: int) -> dict:
    """Greedy outputs of `model` on the task's test split and their task metrics."""
    from eval.task_metrics import task_metrics
    from grpo.config import GRPOConfig, load_config
    from grpo.data import make_examples, read_jsonl
    from grpo.models import load_model
    from grpo.rollout import greedy_completions
    from rewards.embedding import build_encoder

    cfg = load_config(GRPOConfig, TASKS[task]["grpo"])
    model_obj, tokenizer = load_model(model)
    examples = make_examples(read_jsonl(Path(cfg.data) / "test.jsonl"), tokenizer, task=cfg.task,
                             source_lang=cfg.source_lang, target_lang=cfg.target_lang, data_langs=cfg.data_langs)
    examples = [e for e in examples
                if len(tokenizer(e["prompt"], add_special_tokens=False).input_ids) <= cfg.max_prompt_tokens][:limit]
    outputs = greedy_completions(model_obj, tokenizer, [e["prompt"] for e in examples], cfg.eval_max_new_tokens)
    metrics = task_metrics(outputs, [e["target"] for e in examples], cfg.target_lang, build_encoder(cfg.encoder))
    with open(out_file, "w", encoding="utf-8") as f:
        for example, output in zip(examples, outputs):
            f.write(json.dumps({"id": example["id"], "source": example["source"], "target": example["target"],
                                "output": output}, ensure_ascii=False) + "\n")
    return metrics


def plot_training_curves(out: Path, runs: list[str]) -> Path | None:
    """Every arm's training curves (`grpo.plot`: GRPO rewards, KL, ...; SFT losses) in one PNG."""
    from grpo.errors import UserError
    from grpo.plot import plot_runs

    try:
        return plot_runs([out / name for name in runs], out / "training_curves.png")
    except UserError as err:
        print(f"no training-curve plot: {err}")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/reproduce")
    parser.add_argument("--tasks", nargs="+", default=["mt", "hg"], choices=sorted(TASKS))
    parser.add_argument("--test-limit", type=int, default=48, help="test examples scored per task")
    args = parser.parse_args(argv)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    # arm -> (model name or run folder, the task it was trained on; "" for the base)
    arms: dict[str, tuple[str, str]] = {"base": ("smollm2-135m", "")}
    for task in args.tasks:
        configs = TASKS[task]
        sft, cold, grpo = out / f"sft-{task}", out / f"cold-start-{task}", out / f"grpo-{task}"
        run_stage(f"sft-{task}", sft / "final", [PYTHON, "-m", "baselines.sft", configs["sft"], f"out_dir={sft}",
                                                 "overwrite=true"], out / "logs", timings)
        run_stage(f"cold-start-{task}", cold / "final", [PYTHON, "-m", "baselines.sft", configs["cold_start"],
                                                         f"out_dir={cold}", "overwrite=true"], out / "logs", timings)
        run_stage(f"tau-{task}", cold / "grpo.toml", [PYTHON, "-m", "grpo.tau", "--model", str(cold / "final"),
                                                      "--config", configs["grpo"], "--out", str(cold / "grpo.toml")],
                  out / "logs", timings)
        run_stage(f"grpo-{task}", grpo / "final", [PYTHON, "-m", "grpo.train", str(cold / "grpo.toml"),
                                                   f"out_dir={grpo}", "overwrite=true", *GRPO_ARGS],
                  out / "logs", timings)
        arms[f"sft-{task}"] = (str(sft), task)
        arms[f"grpo-{task}"] = (str(grpo), task)
        if task == "mt":
            bleu = out / "grpo-bleu-mt"
            run_stage("grpo-bleu-mt", bleu / "final", [PYTHON, "-m", "grpo.train", str(cold / "grpo.toml"),
                                                       f"out_dir={bleu}", "overwrite=true", BLEU_REWARD, *GRPO_ARGS],
                      out / "logs", timings)
            arms["grpo-bleu-mt"] = (str(bleu), "mt")
        timings_file.write_text(json.dumps(timings, indent=2))

    metrics_file = out / "test_metrics.json"
    test_results = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    for task in args.tasks:
        for arm, (model, arm_task) in arms.items():
            key = f"{arm}@{task}"
            if key in test_results or arm_task not in ("", task):
                continue
            print(f"[run]  test metrics {key}", flush=True)
            start = time.time()
            checkpoint = model if arm == "base" else str(Path(model) / "final")
            test_results[key] = test_metrics(checkpoint, task, out / f"test_outputs_{arm}_{task}.jsonl",
                                             args.test_limit)
            timings[f"test-{key}"] = round(time.time() - start, 1)
            metrics_file.write_text(json.dumps(test_results, indent=2))
            timings_file.write_text(json.dumps(timings, indent=2))

    tuned = [model for arm, (model, _) in arms.items() if arm != "base"]
    run_stage("alignment-tax", out / "alignment-tax" / "alignment_tax.json",
              [PYTHON, "-m", "eval.alignment_tax", "--base", "smollm2-135m", "--tuned", *tuned,
               "--out", str(out / "alignment-tax")], out / "logs", timings)
    timings_file.write_text(json.dumps(timings, indent=2))
    plot_training_curves(out, [name for name in sorted(p.name for p in out.iterdir() if p.is_dir())
                               if (out / name / "metrics.jsonl").exists()])
    print(f"done: {out}  (test metrics: {metrics_file}; alignment tax: {out / 'alignment-tax'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
