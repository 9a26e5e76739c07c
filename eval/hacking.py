"""Does a model translate, or has it found a way to collect the reward without translating?

A policy trained on a learned reward can raise the reward with outputs that
are not translations: one generic answer that sits close to every reference
in embedding space (a hedge), a copy of the source (the reward encoder is
cross-lingual, so an untranslated sentence scores like a translation), or
padding. The statistics below catch each of these from the outputs alone,
and every dev evaluation logs them:

    distinct_ratio      distinct outputs / items              (a hedge drives it down)
    top_share           the most frequent output's count / items
    target_language     share of outputs written only in the target script   (a copy drives it down)
    length_ratio        mean over items of len(output) / mean len(references), in characters
    chrf, bleu          corpus chrF and BLEU on [0, 1]: surface overlap, which no hedge earns

    output_statistics(["我们走吧。", "我们走吧。"], [["走吧。"], ["他来了。"]], "zh")
    -> {"distinct_ratio": 0.5, "top_share": 1.0, "target_language": 1.0, "length_ratio": ..., ...}
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from eval.task_metrics import References, corpus_bleu, corpus_chrf, reference_lists
from rewards.base import example_references
from rewards.language import LANGUAGE_SCRIPTS, is_consistent, scripts_for_language
from rewards.length import length_ratio

# Thresholds of the one-line warning a dev evaluation prints: far from what a
# translating model does (every source differs, so every output should), but
# crossed quickly once a policy settles on a hedge.
WARN_TOP_SHARE = 0.10
WARN_DISTINCT_RATIO = 0.50


def length_ratios(outputs: list[str], references: References) -> list[float]:
    """Per item: visible characters of the output / mean visible characters of its references.

        ratio_i = |out_i| / ((1/k_i) sum_j |ref_ij|)

    Padding and repetition push it above 1, empty and truncated answers below.
    """
    return [length_ratio(output, refs) for output, refs in zip(outputs, reference_lists(references))]


def output_statistics(outputs: list[str], references: References, target_lang: str) -> dict[str, float]:
    """The hacking statistics of one set of outputs (aligned with `references`); see the module docstring.

    Outputs are compared after stripping surrounding whitespace, so "x" and
    "x " count as the same answer.
    """
    if not outputs or len(outputs) != len(references):
        raise ValueError(f"need aligned, non-empty outputs and references: {len(outputs)} vs {len(references)}")
    answers = [output.strip() for output in outputs]
    counts = Counter(answers)
    scripts = scripts_for_language(target_lang, LANGUAGE_SCRIPTS)
    return {
        "distinct_ratio": len(counts) / len(answers),
        "top_share": counts.most_common(1)[0][1] / len(answers),
        "target_language": float(np.mean([is_consistent(answer, scripts) for answer in answers])),
        "length_ratio": float(np.mean(length_ratios(answers, references))),
        "chrf": corpus_chrf(answers, references),
        "bleu": corpus_bleu(answers, references, target_lang),
    }


def most_frequent_output(outputs: list[str]) -> str:
    """The answer given most often (ties: the first to reach the count)."""
    return Counter(output.strip() for output in outputs).most_common(1)[0][0]


def hacking_warning(stats: dict[str, float], outputs: list[str]) -> str | None:
    """One line when the outputs look like a hedge rather than translations, else None."""
    if stats["top_share"] <= WARN_TOP_SHARE and stats["distinct_ratio"] >= WARN_DISTINCT_RATIO:
        return None
    return (f"warning: the outputs look like a hedge, not translations: {stats['distinct_ratio']:.0%} distinct, "
            f"the most frequent ({most_frequent_output(outputs)[:30]!r}) is {stats['top_share']:.0%} of them "
            f"(warned above {WARN_TOP_SHARE:.0%} or below {WARN_DISTINCT_RATIO:.0%} distinct)")


# --------------------------------------------------------------------------
# The hacking table: what the reward pays for answers that are not translations
# --------------------------------------------------------------------------
def derangement(count: int, seed: int = 0) -> list[int]:
    """A seeded permutation of range(count) that moves every index (count >= 2)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(count)
        if not np.any(order == np.arange(count)):
            return order.tolist()


def trivial_outputs(examples: list[dict], constant: str, filler: str = "的") -> dict[str, list[str]]:
    """Answers that a policy could learn instead of translating, each a list aligned with `examples`.

    The reference itself heads the list: every other row should score below it.
    """
    references = [example["target"] for example in examples]
    shuffled = derangement(len(examples))
    return {
        "reference": references,
        "English source copied": [example["source"] for example in examples],
        "empty output": [""] * len(examples),
        f"one repeated character ({filler} x 12)": [filler * 12] * len(examples),
        f"best constant ({constant})": [constant] * len(examples),
        "reference doubled": [reference + reference for reference in references],
        "reference + English source": [f"{reference} {example['source']}"
                                       for reference, example in zip(references, examples)],
        "shuffled reference": [references[j] for j in shuffled],
    }


def best_constant_answer(reward_fn, pool: list[dict]) -> tuple[str, float]:
    """The answer that, given to every item of `pool`, earns the highest mean reward; and that mean.

    The candidates are the pool's own references: whatever hedge a policy
    can find among the texts it is trained towards, this finds too.
    """
    candidates = list(dict.fromkeys(ref for example in pool for ref in example_references(example, "constant")))
    prompts = [example["prompt"] for example in pool]
    means = [float(np.nanmean(reward_fn(prompts, [candidate] * len(pool), pool).values)) for candidate in candidates]
    best = int(np.argmax(means))
    return candidates[best], means[best]


def hacking_table(reward_fn, examples: list[dict], constant: str) -> dict[str, dict[str, float]]:
    """Mean reward, and mean of each reward term, of every trivial answer on `examples`."""
    prompts = [example["prompt"] for example in examples]
    table = {}
    for name, outputs in trivial_outputs(examples, constant).items():
        scored = reward_fn(prompts, outputs, examples)
        table[name] = {"reward": float(np.nanmean(scored.values)),
                       **{term: float(np.nanmean(values)) for term, values in scored.components.items()}}
    return table


def markdown_hacking_table(table: dict[str, dict[str, float]], terms: list[str]) -> str:
    """The hacking table as markdown: one row per answer, its total reward and each term's mean."""
    lines = ["| answer | reward | " + " | ".join(terms) + " |", "| --- | ---: |" + " ---: |" * len(terms)]
    for name, row in table.items():
        lines.append(f"| {name} | {row['reward']:.3f} | " + " | ".join(f"{row.get(t, float('nan')):.3f}" for t in terms)
                     + " |")
    return "\n".join(lines)


def measured_statistics(folder: Path, references: dict[str, list[str]], target_lang: str) -> dict[str, dict]:
    """The hacking statistics of every checkpoint measured by `eval.reproduce` (one JSON file each) in `folder`."""
    table = {}
    for path in sorted(folder.glob("*.json")):
        task = json.loads(path.read_text(encoding="utf-8")).get("task")
        if task and task.get("outputs"):
            table[path.stem] = output_statistics(task["outputs"], [references[i] for i in task["ids"]], target_lang)
    return table


def markdown_statistics(table: dict[str, dict[str, float]]) -> str:
    """Hacking statistics as markdown: one row per set of outputs."""
    keys = ("distinct_ratio", "top_share", "target_language", "length_ratio", "chrf", "bleu")
    lines = ["| outputs | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |" for name, row in table.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """python -m eval.hacking [PRESET] [key=value ...]: the hacking table of a GRPO preset's reward on its dev set.

    The best constant is chosen on the cold-start pool: the `--pool` seeded
    training examples. With --measured DIR --references FILE, the hacking
    statistics of the outputs `eval.reproduce` measured instead.
    """
    import argparse

    from grpo.run.errors import exit_code_of

    parser = argparse.ArgumentParser(prog="python -m eval.hacking", description=main.__doc__.split("\n\n")[0])
    parser.add_argument("preset", nargs="?", default="configs/mt.toml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (e.g. tau=0.15 dev_limit=0)")
    parser.add_argument("--pool", type=int, default=320, help="cold-start pool size the constant is chosen on")
    parser.add_argument("--measured", type=Path, help="a folder of eval.reproduce measurements")
    parser.add_argument("--references", type=Path, help="the JSONL split those measurements were taken on")
    args = parser.parse_args(argv)
    return exit_code_of(lambda: print(hacking_report(args)))


def hacking_report(args) -> str:
    """What `python -m eval.hacking` prints: the hacking table, or the measured outputs' statistics."""
    from grpo.config import GRPOConfig, build_reward_from_config
    from grpo.run.config import load_config
    from grpo.run.data import read_jsonl
    from grpo.run.models import load_tokenizer
    from grpo.run.training_run import load_task_examples

    cfg = load_config(GRPOConfig, args.preset, args.overrides)
    if args.measured:
        references = {r["id"]: r.get("targets", [r["target"]]) for r in read_jsonl(args.references)}
        return markdown_statistics(measured_statistics(args.measured, references, cfg.target_lang))
    tokenizer = load_tokenizer(cfg.model)
    _, dev = load_task_examples(cfg, tokenizer)
    pool, _ = load_task_examples(load_config(GRPOConfig, args.preset, [*args.overrides, f"limit={args.pool}"]),
                                 tokenizer)
    reward_fn = build_reward_from_config(cfg)
    constant, _ = best_constant_answer(reward_fn, pool)
    table = hacking_table(reward_fn, dev, constant)
    terms = [name for name in next(iter(table.values())) if name != "reward"]
    return (f"{len(dev)} dev items, reward {dict(cfg.reward_weights)}, tau {cfg.tau}, "
            f"language_gate {cfg.language_gate}\n\n{markdown_hacking_table(table, terms)}")


if __name__ == "__main__":
    raise SystemExit(main())
