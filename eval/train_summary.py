"""The table `make train-mt` ends with: did GRPO teach translation, or a way to collect the reward?

    python -m eval.train_summary --cold-start runs/cold-start-mt --grpo runs/grpo-mt [--dev-limit 0]
    python -m eval.train_summary --grpo runs/grpo-mt runs/grpo-mt-s1 runs/grpo-mt-s2   # seeds of one preset

Scores, on the same dev items (all 500 by default: on 200 the paired
intervals of chrF were about +-0.012, wider than what a CPU run gains), the
base model, the cold start and the GRPO stage (greedy outputs), next to the
trivial answers a reward hacker would find:

    copied source     the English sentence, untranslated (the reward encoder is cross-lingual)
    best constant     the one answer that earns the most reward on the cold-start pool, given to every item

Columns: the run's total reward, chrF and BLEU (surface overlap, which no
hedge earns), the semantic similarity judged by the run's reward encoder,
the share in the target script, distinct outputs, the most frequent
output's share and the length ratio (`eval.hacking`). Below the table, the
GRPO - cold start differences in per-item chrF, similarity and reward with
paired bootstrap 95% intervals over the dev items.

Several GRPO runs that differ only in their seed get a row each, and the
differences pooled over them with an interval that resamples seeds and items
(`eval.stats.items_and_seeds_bootstrap_ci`): one seed's interval carries no
sampling luck of the run itself.

Writes <first grpo run>/summary/{summary.json, summary.md, outputs.jsonl}
and prints the table and five examples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
from sacrebleu.metrics import CHRF

from eval.alignment_tax import free
from eval.hacking import best_constant_answer, output_statistics
from eval.stats import bootstrap_mean_ci, items_and_seeds_bootstrap_ci, seed_mean_ci
from eval.task_metrics import embedding_similarities
from grpo.config import GRPOConfig, build_reward_from_config
from grpo.rollout import greedy_completions
from grpo.run.config import load_config
from grpo.run.errors import DataError, exit_code_of
from grpo.run.models import load_model, load_tokenizer
from grpo.run.training_run import autocast, load_task_examples
from rewards.base import example_references
from rewards.embedding import EmbeddingCosineReward, build_encoder
from rewards.lexical import best_chrf

DEFAULT_DEV_LIMIT = 0
EXAMPLES_SHOWN = 5
# The config keys that decide which training examples a run sees.
POOL_KEYS = ("data", "limit", "seed", "task", "source_lang", "target_lang", "data_langs", "max_prompt_tokens",
             "prompt_format")
# The config keys in which GRPO runs summarised together may differ: they are then seeds of one recipe.
SEED_KEYS = ("seed", "out_dir", "overwrite", "resume", "save_every", "keep_checkpoints")
# Columns of the table: (key in a row's scores, header, format).
COLUMNS = (("reward", "reward", "{:.3f}"), ("chrf", "chrF", "{:.1%}"), ("bleu", "BLEU", "{:.1%}"),
           ("similarity", "similarity", "{:.3f}"), ("target_language", "Chinese", "{:.0%}"),
           ("distinct_ratio", "distinct", "{:.1%}"), ("top_share", "top share", "{:.1%}"),
           ("length_ratio", "length ratio", "{:.2f}"))


def reward_encoder(reward_fn, cfg: GRPOConfig):
    """The run's reward encoder (its semantic term's), or the configured one when the reward has none."""
    for _, term in getattr(reward_fn, "terms", []):
        if isinstance(term, EmbeddingCosineReward):
            return term.encoder
    return build_encoder(cfg.encoder, pooling=cfg.encoder_pooling, device=cfg.device)


def score_outputs(outputs: list[str], examples: list[dict], reward_fn, encoder, target_lang: str) -> dict:
    """Per-item scores (reward, chrF, similarity) and the corpus-level statistics of one set of outputs."""
    references = [example_references(example, "summary") for example in examples]
    rewards = reward_fn([example["prompt"] for example in examples], outputs, examples).values
    chrf = CHRF()
    per_item = {"reward": [float(r) for r in rewards],
                "chrf": [best_chrf(chrf, output, refs) for output, refs in zip(outputs, references)],
                "similarity": embedding_similarities(outputs, references, encoder)}
    corpus = {"reward": float(np.nanmean(rewards)), "similarity": float(np.mean(per_item["similarity"])),
              **output_statistics(outputs, references, target_lang)}
    return {"per_item": per_item, "scores": corpus}


def paired_differences(after: dict, before: dict) -> dict:
    """mean(after_i - before_i) over items with its paired bootstrap 95% interval, per per-item score."""
    out = {}
    for key in after["per_item"]:
        differences = np.asarray(after["per_item"][key]) - np.asarray(before["per_item"][key])
        mean, low, high = bootstrap_mean_ci(differences[np.isfinite(differences)])
        out[key] = {"mean": mean, "low": low, "high": high}
    return out


def markdown_table(rows: dict[str, dict]) -> str:
    """One line per row of outputs, one column per score."""
    lines = ["| outputs | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "| --- |" + " ---: |" * len(COLUMNS)]
    for name, scores in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(scores[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def pooled_differences(runs: list[dict], before: dict) -> dict:
    """The GRPO - cold start differences pooled over seeds, per per-item score.

        d[s, i] = after_s_i - before_i;  mean over s and i, with the interval of
        `items_and_seeds_bootstrap_ci` (seeds and items resampled), and each
        seed's mean with their Student-t interval (`seed_mean_ci`).
    """
    out = {}
    for key in before["per_item"]:
        differences = np.array([np.asarray(run["per_item"][key]) - np.asarray(before["per_item"][key])
                                for run in runs])
        differences = differences[:, np.isfinite(differences).all(axis=0)]
        mean, low, high = items_and_seeds_bootstrap_ci(differences)
        seed_means = differences.mean(axis=1)
        _, seed_low, seed_high = seed_mean_ci(seed_means)
        out[key] = {"mean": mean, "low": low, "high": high, "seed_means": [float(m) for m in seed_means],
                    "seed_low": seed_low, "seed_high": seed_high}
    return out


def markdown_differences(differences: dict, pooled: dict | None) -> str:
    """One line per run and score (mean [95% interval]), then one per score pooled over the seeds, if any."""
    lines = [f"- {name} - cold start, {key}: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
             for name, run in differences.items() for key, d in run.items()]
    if pooled:
        lines += [f"- over the {len(d['seed_means'])} seeds, {key}: {d['mean']:+.4f} [{d['low']:+.4f}, "
                  f"{d['high']:+.4f}] (seeds and items resampled); per seed "
                  + ", ".join(f"{m:+.4f}" for m in d["seed_means"])
                  + f", t interval [{d['seed_low']:+.4f}, {d['seed_high']:+.4f}]" for key, d in pooled.items()]
    return "\n".join(lines)


def model_outputs(checkpoint: str, examples: list[dict], cfg: GRPOConfig, label: str) -> list[str]:
    """Greedy outputs of one checkpoint on the examples, with a progress bar.

    Decoded under the run's autocast (bf16 when mixed_precision = "bf16"), as
    the run's own dev evaluations are, for every row alike."""
    model, tokenizer = load_model(checkpoint, cfg.dtype, cfg.device)
    with autocast(cfg):
        outputs = greedy_completions(model, tokenizer, [e["prompt"] for e in examples], cfg.eval_max_new_tokens,
                                     progress=True, desc=label)
    free(model)
    return outputs


def refuse_unlike_runs(grpo_dirs: list[Path]) -> None:
    """Runs pooled as seeds must share every setting but SEED_KEYS; name the first that does not."""
    if len(set(grpo_dirs)) < len(grpo_dirs):
        raise DataError(f"a GRPO run is named twice in {', '.join(map(str, grpo_dirs))}")
    first = load_saved(grpo_dirs[0])
    for other in grpo_dirs[1:]:
        saved = load_saved(other)
        differ = sorted(key for key in first.keys() | saved.keys()
                        if key not in SEED_KEYS and first.get(key) != saved.get(key))
        if differ:
            raise DataError(f"'{grpo_dirs[0]}' and '{other}' differ in {', '.join(differ)}: runs summarised "
                            f"together are pooled as seeds, so they may differ only in {', '.join(SEED_KEYS)}")


def summarise(cold_start_dir: Path, grpo_dirs: list[Path], dev_limit: int) -> dict:
    """Every row of the summary, the GRPO - cold start differences (per run, and pooled over seeds), and the
    outputs themselves."""
    for folder in (cold_start_dir, *grpo_dirs):
        if not (folder / "config.toml").is_file() or not (folder / "final").exists():
            raise DataError(f"'{folder}' is not a finished run (no config.toml or final checkpoint)")
    refuse_unlike_runs(grpo_dirs)
    cfg = load_config(GRPOConfig, grpo_dirs[0] / "config.toml", {"dev_limit": dev_limit})
    # The cold start's training pool, as its (SFT) config chose it: the same data keys, limit and seed.
    cold_saved = load_saved(cold_start_dir)
    cold_cfg = load_config(GRPOConfig, None, {key: cold_saved[key] for key in POOL_KEYS if key in cold_saved})
    base_model = cold_saved["model"]
    tokenizer = load_tokenizer(base_model)
    _, dev = load_task_examples(cfg, tokenizer)
    pool, _ = load_task_examples(cold_cfg, tokenizer)
    if not dev:
        raise DataError(f"'{cfg.data}' has no dev split to summarise on")
    reward_fn = build_reward_from_config(cfg)
    encoder = reward_encoder(reward_fn, cfg)

    constant, pool_reward = best_constant_answer(reward_fn, pool)
    grpo_names = ["GRPO"] if len(grpo_dirs) == 1 else [f"GRPO {folder}" for folder in grpo_dirs]
    outputs = {"base model": model_outputs(base_model, dev, cfg, "base"),
               "cold start": model_outputs(str(cold_start_dir / "final"), dev, cfg, "cold start"),
               **{name: model_outputs(str(folder / "final"), dev, cfg, name)
                  for name, folder in zip(grpo_names, grpo_dirs)},
               "copied source": [e["source"] for e in dev],
               f"best constant {constant!r}": [constant] * len(dev)}
    rows = {name: score_outputs(texts, dev, reward_fn, encoder, cfg.target_lang) for name, texts in outputs.items()}
    pooled = pooled_differences([rows[name] for name in grpo_names], rows["cold start"]) if len(grpo_dirs) > 1 \
        else None
    return {"dev_items": len(dev), "reward_weights": dict(cfg.reward_weights), "tau": cfg.tau,
            "encoder": cfg.encoder, "best_constant": {"answer": constant, "pool_reward": pool_reward,
                                                      "pool_size": len(pool)},
            "grpo_runs": [str(folder) for folder in grpo_dirs],
            "rows": {name: row["scores"] for name, row in rows.items()},
            "grpo_minus_cold_start": {name: paired_differences(rows[name], rows["cold start"])
                                      for name in grpo_names},
            "grpo_minus_cold_start_over_seeds": pooled,
            "examples": dev, "outputs": outputs}


def load_saved(run_dir: Path) -> dict:
    """A run's resolved config.toml as a plain dict."""
    return tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))


def write_summary(summary: dict, out_dir: Path) -> str:
    """summary.json, summary.md and outputs.jsonl (one dev item a line, every row's output); returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    examples, outputs = summary["examples"], summary["outputs"]
    with open(out_dir / "outputs.jsonl", "w", encoding="utf-8") as f:
        for i, example in enumerate(examples):
            f.write(json.dumps({"id": example["id"], "source": example["source"], "targets": example["targets"],
                                **{name: texts[i] for name, texts in outputs.items()}}, ensure_ascii=False) + "\n")
    numbers = {key: value for key, value in summary.items() if key not in ("examples", "outputs")}
    (out_dir / "summary.json").write_text(json.dumps(numbers, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    shown = [f"- source: {examples[i]['source']}\n  reference: {examples[i]['target']}\n"
             f"  cold start: {outputs['cold start'][i]}\n"
             + "\n".join(f"  {name}: {outputs[name][i]}" for name in summary["grpo_minus_cold_start"])
             for i in range(min(EXAMPLES_SHOWN, len(examples)))]
    text = (f"{summary['dev_items']} dev items; reward {summary['reward_weights']}, tau {summary['tau']}, "
            f"encoder {summary['encoder']}\n\n{markdown_table(summary['rows'])}\n\n"
            f"{markdown_differences(summary['grpo_minus_cold_start'], summary['grpo_minus_cold_start_over_seeds'])}"
            "\n\n" + "\n".join(shown) + "\n")
    (out_dir / "summary.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.train_summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-start", type=Path, default=Path("runs/cold-start-mt"), help="the cold-start run folder")
    parser.add_argument("--grpo", type=Path, nargs="+", default=[Path("runs/grpo-mt")],
                        help="the GRPO run folder, or several that differ only in their seed")
    parser.add_argument("--dev-limit", type=int, default=DEFAULT_DEV_LIMIT,
                        help="dev items scored (a seeded subset; default 0 = all)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <first grpo run>/summary)")
    args = parser.parse_args(argv)
    return exit_code_of(lambda: print(write_summary(summarise(args.cold_start, args.grpo, args.dev_limit),
                                                    args.out or args.grpo[0] / "summary")))


if __name__ == "__main__":
    sys.exit(main())
