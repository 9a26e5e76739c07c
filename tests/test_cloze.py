"""Cloze probe: teacher-forced greedy accuracy and target log-likelihood against one plain pass per item."""

import json

import pytest
import torch

from eval.cloze import cloze_summary, encode_items, evaluate_cloze, score_cloze
from grpo.run.errors import DataError

ITEMS = [
    {"id": "a", "context": "The cat sat on the", "target": "mat"},
    {"id": "b", "context": "A much longer context about programming languages and their", "target": "interpreters"},
    {"id": "c", "context": "One two three four five six seven eight nine", "target": "ten"},
]


def naive_scores(model, tokenizer, item):
    """One unpadded pass over context + ' ' + target: (greedy hit at every target token, sum log p)."""
    context_ids = tokenizer(item["context"], add_special_tokens=True).input_ids
    full_ids = tokenizer(item["context"] + " " + item["target"], add_special_tokens=True).input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([full_ids])).logits[0].float(), -1)
    positions = range(len(context_ids) - 1, len(full_ids) - 1)
    targets = full_ids[len(context_ids):]
    hits = all(int(logprobs[p].argmax()) == t for p, t in zip(positions, targets))
    return hits, float(sum(logprobs[p, t] for p, t in zip(positions, targets)))


def test_scores_match_one_plain_pass_per_item(tiny):
    model, tokenizer = tiny
    rows = score_cloze(model, tokenizer, ITEMS, batch_size=2, progress=False)
    for item, row in zip(ITEMS, rows):
        hit, logprob = naive_scores(model, tokenizer, item)
        assert row["correct"] == hit
        assert row["target_logprob"] == pytest.approx(logprob, abs=1e-4)
        assert row["target_tokens"] == len(encode_items(tokenizer, [item])[1][0])


def test_summary_by_hand():
    rows = [{"correct": True, "target_logprob": -1.0}, {"correct": False, "target_logprob": -3.0},
            {"correct": True, "target_logprob": -2.0}, {"correct": False, "target_logprob": -6.0}]
    assert cloze_summary(rows) == {"n": 4, "accuracy": 50.0, "target_logprob": -3.0}


def test_file_round_trip_and_bad_input(tiny, tmp_path):
    model, tokenizer = tiny
    path = tmp_path / "cloze.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    summary, rows = evaluate_cloze(model, tokenizer, path, max_examples=2, progress=False)
    assert summary["n"] == 2 and [row["id"] for row in rows] == ["a", "b"]
    path.write_text(json.dumps({"id": "x", "context": "no target"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="field 'target' is missing"):
        evaluate_cloze(model, tokenizer, path, progress=False)


def test_alignment_tax_suite_runs_the_cloze_probe(tiny, tmp_path):
    """A [cloze] table in the suite gives alignment_tax the same accuracy as scoring the file directly."""
    from eval.alignment_tax import main
    from eval.suite import ClozeProbe, load_suite

    model, tokenizer = tiny
    items = tmp_path / "cloze.jsonl"
    items.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    suite = tmp_path / "suite.toml"
    suite.write_text(f'[cloze]\nkind = "cloze"\nfile = "{items}"\nbatch_size = 2\n', encoding="utf-8")
    assert isinstance(load_suite(suite).benchmarks["cloze"], ClozeProbe)
    out = tmp_path / "out"
    assert main(["--base", "tiny-random-llama", "--suite", str(suite), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "alignment_tax.json").read_text(encoding="utf-8"))
    hits = [naive_scores(model, tokenizer, item)[0] for item in ITEMS]
    assert report["base"]["scores"]["cloze"]["n"] == 3
    assert report["base"]["headline"]["cloze"] == pytest.approx(100.0 * sum(hits) / 3)
    assert "| model | n | accuracy | target_logprob |" in (out / "alignment_tax.md").read_text(encoding="utf-8")
