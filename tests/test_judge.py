"""The pairwise judge: pairing by id, both-order verdicts, rates and bootstrap intervals."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.judge import (
    DEFAULT_TEMPLATE,
    bootstrap_intervals,
    judge_pairs,
    judge_prompt,
    main,
    outcome_rates,
    pair_outcome,
    pair_outputs,
    read_outputs,
    read_template,
    summarise,
    verdict_token_ids,
)
from grpo.run.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_pairs_are_matched_by_id():
    pairs = pair_outputs(read_outputs(FIXTURES / "outputs_a.jsonl"), read_outputs(FIXTURES / "outputs_b.jsonl"))
    # cldr-month-1 is only in A; B lists the others in another order.
    assert [p["id"] for p in pairs] == ["cldr-language-es", "cldr-language-da", "cldr-currency-INR"]
    assert pairs[0] == {"id": "cldr-language-es", "source": "ཞི་པན་ཡའི།", "reference": "西班牙语",
                        "output_a": "西班牙语", "output_b": "Spanish"}
    assert pairs[2]["output_a"] == ""  # an empty output is a valid output


def test_mismatched_inputs_are_data_errors(tmp_path):
    a = read_outputs(FIXTURES / "outputs_a.jsonl")
    b = {key: dict(record) for key, record in read_outputs(FIXTURES / "outputs_b.jsonl").items()}
    b["cldr-language-es"]["source"] = "other"
    with pytest.raises(DataError, match="different sources"):
        pair_outputs(a, b)
    with pytest.raises(DataError, match="share no id"):
        pair_outputs(a, {})
    no_output = tmp_path / "x.jsonl"
    no_output.write_text('{"id": "1", "source": "s", "target": "t"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no string field 'output'"):
        read_outputs(no_output)


def test_template_placeholders_are_checked(tmp_path):
    assert "{output_b}" in read_template(DEFAULT_TEMPLATE)
    path = tmp_path / "t.txt"
    path.write_text("{source} {output_a}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"missing \['output_b'\]"):
        read_template(path)
    path.write_text("{output_a} {output_b} {score}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown placeholders \['score'\]"):
        read_template(path)


def test_outcome_needs_agreement_in_both_orders():
    assert pair_outcome("A", "B") == 1    # A first: A better; B first: the second (A) better
    assert pair_outcome("B", "A") == -1
    assert pair_outcome("A", "A") == 0    # followed the position
    assert pair_outcome("tie", "B") == 0
    assert pair_outcome("tie", "tie") == 0


def test_rates_and_bootstrap_by_hand():
    assert outcome_rates(np.array([1, 1, 0, -1])) == {"win": 0.5, "tie": 0.25, "loss": 0.25}
    assert bootstrap_intervals(np.array([1, 1, 1]))["win"] == (1.0, 1.0)
    # Two pairs, one win and one loss: a resample's win rate is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles of 1000 resamples are 0 and 1.
    intervals = bootstrap_intervals(np.array([1, -1]), n_resamples=1000, seed=0)
    assert intervals["win"] == (0.0, 1.0) and intervals["tie"] == (0.0, 0.0)
    assert bootstrap_intervals(np.array([1, 0, -1, 1]), seed=3) == bootstrap_intervals(np.array([1, 0, -1, 1]), seed=3)


def test_prompt_orders_and_verdict_tokens(tiny):
    _, tokenizer = tiny
    pair = {"id": "1", "source": "S", "reference": "R", "output_a": "first-system", "output_b": "second-system"}
    template = read_template(DEFAULT_TEMPLATE)
    in_order = judge_prompt(tokenizer, template, pair, swapped=False, prompt_format="plain")
    swapped = judge_prompt(tokenizer, template, pair, swapped=True, prompt_format="plain")
    assert in_order.index("first-system") < in_order.index("second-system")
    assert swapped.index("second-system") < swapped.index("first-system")
    assert in_order.endswith("A, B, or tie.\n\nVerdict:")
    # After "Verdict:" the verdicts follow a space; after the chat template's newline they do not.
    assert verdict_token_ids(tokenizer, in_order) == [tokenizer(w, add_special_tokens=False).input_ids[0]
                                                      for w in (" A", " B", " tie")]
    chat = judge_prompt(tokenizer, template, pair, swapped=False, prompt_format="chat")
    assert verdict_token_ids(tokenizer, chat) == [tokenizer(w, add_special_tokens=False).input_ids[0]
                                                  for w in ("A", "B", "tie")]


def test_verdicts_are_the_most_likely_first_tokens(tiny):
    model, tokenizer = tiny
    pairs = pair_outputs(read_outputs(FIXTURES / "outputs_a.jsonl"), read_outputs(FIXTURES / "outputs_b.jsonl"))
    template = read_template(DEFAULT_TEMPLATE)
    rows = judge_pairs(model, tokenizer, template, pairs, "plain", batch_size=3, progress=False)
    ids = verdict_token_ids(tokenizer, judge_prompt(tokenizer, template, pairs[0], False, "plain"))
    for pair, row in zip(pairs, rows):
        for swapped, key in ((False, "verdict_in_order"), (True, "verdict_swapped")):
            prompt_ids = tokenizer(judge_prompt(tokenizer, template, pair, swapped, "plain"),
                                   return_tensors="pt", add_special_tokens=False).input_ids
            with torch.no_grad():
                logits = model(input_ids=prompt_ids).logits[0, -1]
            assert row[key] == ("A", "B", "tie")[int(logits[ids].argmax())]
        assert row["outcome"] == pair_outcome(row["verdict_in_order"], row["verdict_swapped"])


def test_identical_outputs_always_tie(tiny):
    # Both orders show the same prompt, so the judge gives the same letter twice: never a win.
    model, tokenizer = tiny
    pairs = [{"id": str(i), "source": "s", "reference": "r", "output_a": text, "output_b": text}
             for i, text in enumerate(["北京", "Paris", ""])]
    rows = judge_pairs(model, tokenizer, read_template(DEFAULT_TEMPLATE), pairs, progress=False)
    summary = summarise(rows, n_resamples=200)
    assert summary["rates"] == {"win": 0.0, "tie": 1.0, "loss": 0.0}
    assert summary["ci95"]["tie"] == (1.0, 1.0)


def test_command_line_writes_the_report(tmp_path, capsys):
    out = tmp_path / "judge.json"
    code = main(["--judge", "tiny-random-llama", "--a", str(FIXTURES / "outputs_a.jsonl"),
                 "--b", str(FIXTURES / "outputs_b.jsonl"), "--out", str(out), "--quiet", "--resamples", "100"])
    assert code == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["pairs"] == 3 and len(report["verdicts"]) == 3
    assert sum(report["rates"].values()) == pytest.approx(1.0)
    assert "pairs judged in both orders" in capsys.readouterr().out
    assert main(["--judge", "tiny-random-llama", "--a", str(FIXTURES / "outputs_a.jsonl"),
                 "--b", str(tmp_path / "missing.jsonl")]) == 2
