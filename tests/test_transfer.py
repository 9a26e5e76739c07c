"""The paper's transfer experiment as one command: `make transfer-hg FROM=<MT run> K=<samples>`, and SFT likewise."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, env
from grpo.config import GRPOConfig
from grpo.run.config import load_config
from grpo.run.metrics import read_metrics

HEADLINES = [
    ("国务院昨日召开常务会议，研究部署进一步促进农村经济发展的措施。", "国务院研究农村经济"),
    ("我国科学家在南极考察中发现一批珍贵的陨石样本。", "南极发现陨石样本"),
    ("今年全国粮食总产量再创历史新高，农民收入稳步增长。", "粮食产量创新高"),
    ("北京市开通三条新的公交线路，方便市民出行。", "北京开通新公交线"),
    ("全国人大常委会审议通过了新的环境保护法修正案。", "环保法修正案通过"),
]


@pytest.fixture(scope="module")
def transfer_setup(tmp_path_factory):
    """A finished one-step MT run on the tiny model (the FROM of the transfer) and a small headline data folder."""
    from grpo.cli import train_grpo

    root = tmp_path_factory.mktemp("transfer")
    mt_run = root / "grpo-mt"
    train_grpo(load_config(GRPOConfig, overrides=dict(
        out_dir=str(mt_run), model="tiny-random-llama", data=str(ROOT / "data" / "mt"), max_steps=1,
        prompts_per_step=2, group_size=2, max_new_tokens=4, eval_every=0, dev_limit=0, max_prompt_tokens=96,
        reward_weights={"language": 1.0}, lr=1e-2)))
    data = root / "hg"
    data.mkdir()
    lines = [json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n"
             for source, target in HEADLINES]
    (data / "train.jsonl").write_text("".join(lines), encoding="utf-8")
    (data / "dev.jsonl").write_text("".join(lines[:2]), encoding="utf-8")
    return mt_run, data, root


def make(*args):
    """`make` with this interpreter as the Makefile's python, so that no .venv is needed in the checkout."""
    return subprocess.run(["make", f"PY={sys.executable}", *args], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=600)


def test_make_names_the_run_after_its_source_and_needs_from():
    dry = make("-n", "transfer-hg", "FROM=runs/grpo-mt", "K=1000", "DATA=data/hg")
    assert ("-m grpo configs/hg.toml out_dir=runs/transfer-hg-grpo-mt model=runs/grpo-mt limit=1000"
            in dry.stdout)
    dry = make("-n", "sft-transfer-hg", "FROM=runs/sft-mt/", "DATA=data/hg")
    assert "-m baselines.sft configs/sft_hg.toml out_dir=runs/sft-transfer-hg-sft-mt" in dry.stdout
    assert "limit=1000" in dry.stdout  # K defaults to 1000, the paper's sample count
    missing = make("transfer-hg")
    assert missing.returncode != 0 and "FROM=<MT run folder or model> is required" in missing.stderr


GRPO_ARGS = ("reward_weights={length=1.0} max_steps=1 prompts_per_step=2 group_size=2 max_new_tokens=4 "
             "eval_max_new_tokens=4 dev_limit=2 eval_every=0 threads=1")
SFT_ARGS = ("epochs=0 max_steps=1 batch_size=2 micro_batch_size=0 dev_limit=2 eval_every=0 lora_r=4 lora_alpha=8.0 "
            "max_target_tokens=16 threads=1")


@pytest.mark.parametrize("target, args, metric", [("transfer-hg", GRPO_ARGS, "reward"),
                                                  ("sft-transfer-hg", SFT_ARGS, "loss")])
def test_transfer_starts_from_the_mt_run_on_k_samples(transfer_setup, target, args, metric):
    from baselines.sft import SFTConfig

    mt_run, data, root = transfer_setup
    out = root / target
    result = make(target, f"FROM={mt_run}", "K=3", f"DATA={data}", f"ARGS=out_dir={out} {args}")
    assert result.returncode == 0, result.stderr
    config = load_config(GRPOConfig if metric == "reward" else SFTConfig, out / "config.toml")
    assert (config.model, config.limit, config.task) == (str(mt_run / "final"), 3, "hg")
    assert "3 train / 2 dev examples" in result.stdout + result.stderr
    step = [row for row in read_metrics(out / "metrics.jsonl") if metric in row][0]
    assert step["epoch"] == pytest.approx(2 / 3)  # 2 examples of the 3-example subset
    if metric == "reward":
        assert step["kl"] == pytest.approx(0.0, abs=1e-7)  # the reference is the MT model it starts from
