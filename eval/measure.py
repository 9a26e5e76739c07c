"""Everything the reproduction measures of one checkpoint, against the untouched base model.

    task        greedy outputs on the task's test split, scored per example (chrF, ROUGE-L,
                embedding similarity, language consistency), so gains get intervals over items
    cloze       last-word cloze on held-out English prose (`eval.cloze`): the general skill the
                base model has and the tuning may cost
    mmlu        multiple choice scored by the full answer text (`eval.multiple_choice`), optional
    drift       per-token NLL increase and KL(tuned || base) on general text (`eval.drift`):
                the paper's mechanism measure
    task_kl     KL(base || tuned) and KL(tuned || base) summed over responses the base model
                samples for the task's prompts: RL's Razor's forgetting predictor

Every list keeps one entry per item, in item order, so the report can bootstrap
any difference between two checkpoints over the same items.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from eval.cloze import load_cloze_items, score_cloze
from eval.drift import load_drift_texts, measure_drift, measure_task_kl
from eval.task_metrics import per_example_scores
from grpo.config import GRPOConfig
from grpo.rollout import greedy_completions, sample_groups
from grpo.run.config import load_config
from grpo.run.data import keep_short_prompts, make_examples, read_jsonl

GENERAL_DIR = Path("data/general")


@dataclass
class ProbeSizes:
    """How much of each probe a checkpoint gets: the knobs that trade time for interval width."""

    test_limit: int = 0            # test examples per task, spread evenly over the file (0 = all)
    cloze_items: int = 200         # last-word cloze items (0 = all)
    drift_texts: int = 32          # general texts, spread evenly over the file (Chinese and English halves)
    drift_tokens: int = 128        # each cut to this many tokens
    task_kl_prompts: int = 48      # task prompts with one base-model response each
    task_kl_tokens: int = 32       # response cap for the task-KL samples
    mmlu: bool = False             # multiple choice by full answer text (281 questions)
    max_new_tokens: int = 0        # greedy completion cap on the test split (0 = the preset's eval_max_new_tokens)


@dataclass
class TaskData:
    """The test split of one task as the reproduction scores it, and the base model's task-KL samples."""

    name: str
    prompts: list[str]
    targets: list[str]
    ids: list[str]
    target_lang: str
    max_new_tokens: int
    kl_prompts: list[str]
    kl_response_ids: list[list[int]]


def load_task(name: str, preset: str | Path, tokenizer, base_model, sizes: ProbeSizes, seed: int = 0) -> TaskData:
    """The task's test examples under its preset's prompt settings, and base samples for the task KL.

    The base responses are drawn at temperature 1 with no top-p or top-k, so they are samples of
    pi_0 itself, as the forgetting law's expectation asks.
    """
    cfg = load_config(GRPOConfig, preset)
    path = Path(cfg.data) / "test.jsonl"
    examples = make_examples(read_jsonl(path), tokenizer, task=cfg.task, source_lang=cfg.source_lang,
                             target_lang=cfg.target_lang, data_langs=cfg.data_langs, prompt_format=cfg.prompt_format)
    examples = keep_short_prompts(examples, tokenizer, cfg.max_prompt_tokens, path)
    # The test files are grouped by kind (CLDR languages, currencies, ..., UDHR sentences): a plain
    # head would leave whole kinds out.
    examples = spread(examples, sizes.test_limit)
    kl_prompts = [e["prompt"] for e in examples[: sizes.task_kl_prompts]]
    generator = torch.Generator(device=next(base_model.parameters()).device).manual_seed(seed)
    response_ids = []
    for start in range(0, len(kl_prompts), 16):
        rollout = sample_groups(base_model, tokenizer, kl_prompts[start : start + 16], group_size=1,
                                max_new_tokens=sizes.task_kl_tokens, temperature=1.0, generator=generator)
        for ids, mask in zip(rollout.completion_ids, rollout.completion_mask):
            response_ids.append(ids[mask.bool()].tolist())
    return TaskData(name=name, prompts=[e["prompt"] for e in examples], targets=[e["target"] for e in examples],
                    ids=[e["id"] for e in examples], target_lang=cfg.target_lang,
                    max_new_tokens=sizes.max_new_tokens or cfg.eval_max_new_tokens, kl_prompts=kl_prompts, kl_response_ids=response_ids)


def spread(items: list, count: int) -> list:
    """`count` items taken evenly over the list (all when count is 0 or larger than the list)."""
    if not count or count >= len(items):
        return items
    return [items[int(i * len(items) / count)] for i in range(count)]


def measure_checkpoint(base_model, model, tokenizer, task: TaskData, sizes: ProbeSizes, encoder,
                       general_dir: Path = GENERAL_DIR, progress: bool = False) -> dict:
    """Every measurement of `model` (the base model itself gives the reference row)."""
    outputs = greedy_completions(model, tokenizer, task.prompts, task.max_new_tokens, progress=progress)
    cloze_rows = score_cloze(model, tokenizer, load_cloze_items(general_dir / "cloze.jsonl", sizes.cloze_items),
                             progress=progress)
    texts = spread(load_drift_texts(general_dir / "drift.jsonl"), sizes.drift_texts)
    drift = measure_drift(base_model, model, tokenizer, texts, max_tokens=sizes.drift_tokens, progress=progress)
    task_kl = measure_task_kl(base_model, model, tokenizer, task.kl_prompts, task.kl_response_ids,
                              progress=progress)
    result = {
        "task": {"ids": task.ids, "outputs": outputs,
                 **per_example_scores(outputs, task.targets, task.target_lang, encoder)},
        "cloze": {"correct": [float(r["correct"]) for r in cloze_rows],
                  "target_logprob": [r["target_logprob"] for r in cloze_rows]},
        "drift": drift.summary(),
        "task_kl": {"forward": task_kl.kl_per_text(forward=True).tolist(),
                    "reverse": task_kl.kl_per_text(forward=False).tolist()},
        "sizes": asdict(sizes),
    }
    if sizes.mmlu:
        from eval.multiple_choice import evaluate_multiple_choice

        scores, rows = evaluate_multiple_choice(model, tokenizer, general_dir / "mmlu", split="dev", progress=progress)
        result["mmlu"] = {"correct": [float(row["predicted"] == row["answer"]) for row in rows], **scores}
    return result


def summarise(result: dict) -> dict[str, float]:
    """Plain means of a measurement: the numbers a table shows for one checkpoint."""
    summary = {f"task/{key}": float(np.mean(values)) for key, values in result["task"].items()
               if key not in ("ids", "outputs")}
    summary["cloze/accuracy"] = 100.0 * float(np.mean(result["cloze"]["correct"]))
    summary["cloze/target_logprob"] = float(np.mean(result["cloze"]["target_logprob"]))
    summary.update({f"drift/{key}": value for key, value in result["drift"].items()})
    summary["task_kl/forward"] = float(np.mean(result["task_kl"]["forward"]))
    summary["task_kl/reverse"] = float(np.mean(result["task_kl"]["reverse"]))
    if "mmlu" in result:
        summary["mmlu/accuracy"] = 100.0 * float(np.mean(result["mmlu"]["correct"]))
    return summary
