"""Integration: the whole GRPO loop on the tiny random Llama."""


import numpy as np
import pytest
import torch

from grpo import trainer
from grpo.config import GRPOConfig, load_config
from grpo.metrics import read_metrics
from rewards.base import RewardOutput

REQUIRED_METRICS = [
    "reward", "reward_std", "advantages/mean", "advantages/std", "frac_reward_zero_std", "kl", "entropy",
    "clip_ratio/low_mean", "clip_ratio/high_mean", "completions/mean_length", "completions/max_length",
    "completions/clipped_ratio", "lr", "grad_norm", "time/generate", "time/reward", "time/logprob",
    "time/update", "tokens_per_second",
]


class LowHalfShare:
    """Share of completion tokens whose id is in the lower half of the vocabulary.

    A random policy scores about 0.5 and a policy can raise it quickly: a
    reward for testing that learning happens, not for language.
    """

    name = "low_half"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, prompts, completions, examples):
        values = []
        for text in completions:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            values.append(sum(i < len(self.tokenizer) // 2 for i in ids) / max(len(ids), 1))
        values = np.array(values, dtype=float)
        return RewardOutput(values, {"low_half": values})


def tiny_config(tmp_path, **overrides):
    base = dict(out_dir=str(tmp_path / "run"), model="tiny-random-llama", data="data/mt", max_steps=2,
                prompts_per_step=2, group_size=4, max_new_tokens=6, eval_max_new_tokens=6, dev_limit=4,
                eval_every=0, lr=1e-3, beta=0.04, reward_weights={"language": 1.0}, max_prompt_tokens=96)
    base.update(overrides)
    return load_config(GRPOConfig, overrides=base)


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])


def use_reward(monkeypatch, make):
    monkeypatch.setattr(trainer, "build_reward_from_config", make)


def test_grpo_raises_a_learnable_reward(tmp_path, monkeypatch, tiny):
    _, tokenizer = tiny
    use_reward(monkeypatch, lambda cfg: LowHalfShare(tokenizer))
    cfg = tiny_config(tmp_path, max_steps=14, prompts_per_step=4, group_size=8, max_new_tokens=8, lr=2e-2,
                      beta=0.0, loss_aggregation="token")
    trainer.train(cfg)
    rewards = [row["reward"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward" in row]
    assert len(rewards) == 14
    assert np.mean(rewards[-4:]) > np.mean(rewards[:4]) + 0.1, rewards


def test_every_metric_is_logged_and_first_step_kl_is_zero(tmp_path, monkeypatch, tiny):
    _, tokenizer = tiny
    use_reward(monkeypatch, lambda cfg: LowHalfShare(tokenizer))
    cfg = tiny_config(tmp_path, eval_every=1)
    trainer.train(cfg)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    steps = [row for row in rows if "reward" in row]
    for key in REQUIRED_METRICS + ["rewards/low_half/mean"]:
        assert key in steps[0], key
    # the policy equals the reference before the first update
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert steps[1]["kl"] > 0.0
    evals = [row for row in rows if "eval/reward" in row]
    assert [row["step"] for row in evals] == [0, 1, 2]
    assert (tmp_path / "run" / "eval" / "step-000002.jsonl").exists()


def test_several_inner_epochs_use_old_logprobs(tmp_path, monkeypatch, tiny):
    _, tokenizer = tiny
    use_reward(monkeypatch, lambda cfg: LowHalfShare(tokenizer))
    trainer.train(tiny_config(tmp_path, max_steps=1, mu=3, minibatches=2, lr=1e-2))
    (row,) = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward" in r]
    # 6 updates from one rollout: the later ones see a moved policy
    assert row["kl"] > 0.0
    assert row["clip_ratio/region_mean"] > 0.0


def test_checkpoint_reloads_as_a_model(tmp_path):
    from grpo.models import load_model

    cfg = tiny_config(tmp_path, max_steps=1, lora_r=4, lora_alpha=8.0)
    run_dir = trainer.train(cfg)
    folder = run_dir / "checkpoints" / "step-000001"
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    model, _ = load_model(str(folder))
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_refuses_to_overwrite_a_run(tmp_path):
    from grpo.errors import ConfigError

    trainer.train(tiny_config(tmp_path, max_steps=1))
    with pytest.raises(ConfigError, match="already holds a run"):
        trainer.train(tiny_config(tmp_path, max_steps=1))


def test_micro_batches_give_the_same_update_as_one_batch(tiny, tmp_path):
    # policy_update with micro-batches vs the whole minibatch at once
    from grpo.models import load_model
    from grpo.rollout import sample_groups

    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in ("one", "two words")]
    rollout = sample_groups(model, tokenizer, prompts, 4, 6, generator=torch.Generator().manual_seed(0))
    advantages = torch.randn(8, generator=torch.Generator().manual_seed(1))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    results = []
    for aggregation in ("sequence", "token", "dr_grpo"):
        for micro, share in ((0, False), (4, True), (2, False)):
            model.load_state_dict(initial)
            cfg = tiny_config(tmp_path, micro_batch_size=micro, loss_aggregation=aggregation, beta=0.0,
                              lr=1e-3, max_grad_norm=0.0, share_prompt_pass=share)
            optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
            trainer.policy_update(model, optimizer, scheduler, rollout, rollout.completion_mask, advantages,
                                  None, None, cfg)
            results.append({k: v.clone() for k, v in model.state_dict().items()})
    # per aggregation: whole batch, micro-batches of whole groups with the
    # shared prompt pass, micro-batches of 2 rows without it
    for whole, *micro_results in zip(results[0::3], results[1::3], results[2::3]):
        for micro in micro_results:
            for key in whole:
                assert torch.allclose(whole[key], micro[key], atol=1e-6), key


def step_metrics(run_dir) -> list[dict]:
    return [row for row in read_metrics(run_dir / "metrics.jsonl") if "reward" in row]


def test_generation_key_selects_the_static_sampler_and_changes_no_step(tmp_path, monkeypatch, tiny):
    # The static sampler draws the eager one's tokens here (logits within 1e-5, the same noise), so the
    # two runs log the same rewards and losses; the spy shows that generation=static was not ignored.
    from grpo.static_rollout import StaticSampler

    _, tokenizer = tiny
    use_reward(monkeypatch, lambda cfg: LowHalfShare(tokenizer))
    calls = []
    sample = StaticSampler.__call__
    monkeypatch.setattr(StaticSampler, "__call__", lambda self, *a, **k: calls.append(self) or sample(self, *a, **k))
    runs = {}
    for generation in ("eager", "static"):
        trainer.train(tiny_config(tmp_path / generation, generation=generation))
        runs[generation] = step_metrics(tmp_path / generation / "run")
    assert len(calls) == 2 and calls[0] is calls[1]  # one sampler, kept from step to step
    for eager, static in zip(runs["eager"], runs["static"]):
        for key in ("reward", "loss", "kl", "completions/mean_length", "grad_norm"):
            assert static[key] == eager[key], key


def test_gradient_checkpointing_run_matches_the_plain_run(tmp_path, monkeypatch, tiny):
    _, tokenizer = tiny
    use_reward(monkeypatch, lambda cfg: LowHalfShare(tokenizer))
    checkpointed_layers = []
    wrap = trainer.checkpoint_decoder_layers
    monkeypatch.setattr(trainer, "checkpoint_decoder_layers", lambda model: checkpointed_layers.append(wrap(model)))
    runs = {}
    for flag in (False, True):
        trainer.train(tiny_config(tmp_path / str(flag), gradient_checkpointing=flag))
        runs[flag] = step_metrics(tmp_path / str(flag) / "run")
    assert checkpointed_layers == [2]
    for plain, checkpointed in zip(runs[False], runs[True]):
        for key in ("reward", "loss", "kl", "grad_norm"):
            assert checkpointed[key] == pytest.approx(plain[key], rel=1e-6, abs=1e-9), key


def test_bf16_lora_recipe_trains_with_static_generation_and_checkpointing(tmp_path, monkeypatch, tiny):
    # The paper's recipe on the tiny model: bf16 base, fp32 adapters, bf16 autocast, the static sampler
    # with bf16 generation weights, gradient checkpointing.
    _, tokenizer = tiny
    use_reward(monkeypatch, lambda cfg: LowHalfShare(tokenizer))
    cfg = tiny_config(tmp_path, dtype="bfloat16", lora_r=4, lora_alpha=8.0, mixed_precision="bf16",
                      generation="static", gradient_checkpointing=True)
    trainer.train(cfg)
    rows = step_metrics(tmp_path / "run")
    assert len(rows) == 2 and all(np.isfinite(row["loss"]) and row["grad_norm"] > 0 for row in rows)
    assert rows[1]["kl"] > 0  # the adapters moved the policy away from the bf16 base
