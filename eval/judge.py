"""Pairwise LLM-as-judge: which of two systems' outputs is better, with ties and a bootstrap interval.

    python -m eval.judge --judge MODEL --a runs/grpo-mt/eval/step-000100.jsonl --b runs/sft-mt/eval/step-000100.jsonl

The inputs are JSONL files with the fields id, source, target and output (the
dev outputs `eval/step-N.jsonl` that training writes); records are paired by
id. A local causal LM reads the template (`eval/judge_prompt.txt` by default,
placeholders {source}, {reference}, {output_a}, {output_b}) and its verdict is
read from its next-token distribution instead of parsed from generated text:
the verdict is the one of "A", "B" and "tie" whose first token is most likely.

Judges prefer whichever response they read first more often than chance, so
each pair is judged twice, with the outputs in both orders. A system wins a
pair only when it wins in both orders; anything else (a tie in either order,
or verdicts that flip with the order) is a tie. Over N pairs

    win rate = #wins / N,   tie rate = #ties / N,   loss rate = #losses / N

each with a 95% percentile-bootstrap interval (pairs resampled with
replacement, fixed seed).
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.next_token import first_token_ids, next_token_logprobs
from grpo.run.data import read_jsonl, render_prompt
from grpo.run.errors import ConfigError, DataError, exit_code_of
from grpo.run.models import DTYPES, load_model

DEFAULT_TEMPLATE = Path(__file__).with_name("judge_prompt.txt")
PLACEHOLDERS = ("source", "reference", "output_a", "output_b")
VERDICTS = ("A", "B", "tie")
OUTCOMES = {"win": 1, "tie": 0, "loss": -1}  # from system A's side
DEFAULT_RESAMPLES = 1000


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def read_template(path: str | Path) -> str:
    """The judge template; ConfigError unless it uses {output_a} and {output_b} and only known placeholders."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"judge template '{path}' does not exist")
    template = path.read_text(encoding="utf-8")
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as err:
        raise ConfigError(f"judge template '{path}': {err}; write literal braces as {{{{ and }}}}") from None
    unknown = sorted(used - set(PLACEHOLDERS))
    missing = sorted({"output_a", "output_b"} - used)
    if unknown or missing:
        raise ConfigError(f"judge template '{path}': unknown placeholders {unknown}, missing {missing}; "
                          f"it may use {{{'}, {'.join(PLACEHOLDERS)}}} and must use {{output_a}} and {{output_b}}")
    return template


def read_outputs(path: str | Path) -> dict[str, dict]:
    """id -> record of a system's output file; the output may be empty, the other fields may not."""
    records = read_jsonl(path, required=("id", "source", "target"))
    for record in records:
        if not isinstance(record.get("output"), str):
            raise DataError(f"{path}: record '{record['id']}' has no string field 'output'")
    by_id = {record["id"]: record for record in records}
    if len(by_id) != len(records):
        raise DataError(f"{path}: ids repeat; each input must appear once")
    return by_id


def pair_outputs(outputs_a: dict[str, dict], outputs_b: dict[str, dict]) -> list[dict]:
    """{"id", "source", "reference", "output_a", "output_b"} for every id in both files, in A's order."""
    pairs = []
    for record_id, a in outputs_a.items():
        b = outputs_b.get(record_id)
        if b is None:
            continue
        if a["source"] != b["source"]:
            raise DataError(f"id '{record_id}' has different sources in the two files: they are not the same inputs")
        pairs.append({"id": record_id, "source": a["source"], "reference": a["target"],
                      "output_a": a["output"], "output_b": b["output"]})
    if not pairs:
        raise DataError("the two output files share no id: judge outputs of the same inputs")
    return pairs


# --------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------
def judge_prompt(tokenizer, template: str, pair: dict, swapped: bool, prompt_format: str = "auto") -> str:
    """The rendered judge prompt, with the two outputs in the given order."""
    first, second = (pair["output_b"], pair["output_a"]) if swapped else (pair["output_a"], pair["output_b"])
    body = template.format(source=pair["source"], reference=pair["reference"], output_a=first, output_b=second)
    return render_prompt(tokenizer, body, body.rstrip() + "\n\nVerdict:", prompt_format)


def verdict_token_ids(tokenizer, prompt: str) -> list[int]:
    """First tokens of "A", "B", "tie" as they would follow the prompt (after a space if it ends in text)."""
    space = "" if prompt[-1:].isspace() else " "
    return first_token_ids(tokenizer, [space + verdict for verdict in VERDICTS])


def pair_outcome(verdict_in_order: str, verdict_swapped: str) -> int:
    """+1 if system A wins in both orders, -1 if B does, 0 otherwise (ties and order-dependent verdicts).

    verdict_in_order: the judge's answer with A's output shown first ("A" = system A).
    verdict_swapped: its answer with B's output shown first ("A" = system B).
    """
    if (verdict_in_order, verdict_swapped) == ("A", "B"):
        return OUTCOMES["win"]
    if (verdict_in_order, verdict_swapped) == ("B", "A"):
        return OUTCOMES["loss"]
    return OUTCOMES["tie"]


@torch.no_grad()
def judge_pairs(model, tokenizer, template: str, pairs: list[dict], prompt_format: str = "auto",
                batch_size: int = 4, progress: bool = True) -> list[dict]:
    """Both-order verdicts for every pair: rows {"id", "verdict_in_order", "verdict_swapped", "outcome", "logprobs"}."""
    model.eval()
    prompts = [judge_prompt(tokenizer, template, pair, swapped, prompt_format)
               for pair in pairs for swapped in (False, True)]                       # [2N], in-order first
    candidate_ids = verdict_token_ids(tokenizer, prompts[0])  # every prompt ends as the template does
    logprobs = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="judge", disable=not progress, leave=False):
        logprobs.append(next_token_logprobs(model, tokenizer, prompts[start : start + batch_size], candidate_ids).cpu())
    scores = torch.cat(logprobs).view(len(pairs), 2, len(VERDICTS))                 # [N, order, verdict]
    rows = []
    for pair, pair_scores in zip(pairs, scores):
        in_order, swapped = (VERDICTS[int(order.argmax())] for order in pair_scores)
        rows.append({"id": pair["id"], "verdict_in_order": in_order, "verdict_swapped": swapped,
                     "outcome": pair_outcome(in_order, swapped),
                     "logprobs": [[round(float(s), 4) for s in order] for order in pair_scores]})
    return rows


# --------------------------------------------------------------------------
# Rates and intervals
# --------------------------------------------------------------------------
def outcome_rates(outcomes: np.ndarray) -> dict[str, float]:
    """Share of pairs that system A wins, ties and loses: #outcome / N. outcomes: [N] in {1, 0, -1}."""
    return {name: float(np.mean(outcomes == value)) for name, value in OUTCOMES.items()}


def bootstrap_intervals(outcomes: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap interval of each rate.

    Draw R resamples of the N pairs with replacement, compute each rate on
    every resample, and take the (1 - c)/2 and (1 + c)/2 quantiles of the R
    values. outcomes: [N] -> {"win": (low, high), "tie": ..., "loss": ...}.
    """
    rng = np.random.default_rng(seed)
    resampled = outcomes[rng.integers(0, len(outcomes), size=(n_resamples, len(outcomes)))]   # [R, N]
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for name, value in OUTCOMES.items():
        low, high = np.percentile((resampled == value).mean(axis=1), [tail, 100 - tail])
        intervals[name] = (float(low), float(high))
    return intervals


def summarise(rows: list[dict], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Rates, 95% intervals, the pair count and how often the verdict flipped with the order."""
    outcomes = np.array([row["outcome"] for row in rows])
    # The same letter in both orders means the judge followed the position, not the output.
    position_following = sum(row["verdict_in_order"] == row["verdict_swapped"] != "tie" for row in rows)
    return {"pairs": len(rows), "rates": outcome_rates(outcomes),
            "ci95": bootstrap_intervals(outcomes, n_resamples, seed),
            "order_dependent": position_following / len(rows)}


def format_summary(summary: dict, name_a: str, name_b: str) -> str:
    rates, intervals = summary["rates"], summary["ci95"]

    def line(label: str, key: str) -> str:
        low, high = intervals[key]
        return f"  {label:<22} {100 * rates[key]:5.1f}%   95% CI [{100 * low:.1f}, {100 * high:.1f}]"

    return "\n".join([
        f"{summary['pairs']} pairs judged in both orders ({100 * summary['order_dependent']:.1f}% of verdicts "
        "followed the position and count as ties)",
        line(f"A wins ({name_a})", "win"), line("tie", "tie"), line(f"B wins ({name_b})", "loss"),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", required=True, help="judge causal LM: builtin name, folder or hub id")
    parser.add_argument("--a", required=True, help="JSONL outputs of system A (id, source, target, output)")
    parser.add_argument("--b", required=True, help="JSONL outputs of system B, same ids")
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE), help="judge prompt template file")
    parser.add_argument("--prompt-format", default="auto", choices=("auto", "chat", "plain"))
    parser.add_argument("--limit", type=int, default=0, help="judge only the first N pairs (0 = all)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", default="", help="write the summary and every verdict to this JSON file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return exit_code_of(lambda: judge_and_report(args))


def judge_and_report(args) -> None:
    """Judge the pairs of outputs, print the summary and write the --out report."""
    template = read_template(args.template)
    pairs = pair_outputs(read_outputs(args.a), read_outputs(args.b))
    if args.limit > 0:
        pairs = pairs[: args.limit]
    model, tokenizer = load_model(args.judge, dtype=args.dtype, device=args.device)
    rows = judge_pairs(model, tokenizer, template, pairs, args.prompt_format, args.batch_size, not args.quiet)
    summary = summarise(rows, args.resamples, args.seed)
    print(format_summary(summary, args.a, args.b))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        report = {"judge": args.judge, "a": args.a, "b": args.b, "template": args.template, **summary, "verdicts": rows}
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
