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


def row_logprobs(model, rollout, row: int) -> torch.Tensor:
    """log pi(o_t | q, o_<t) [n] of one row's completion tokens: one unpadded forward pass, temperature 1."""
    prompt = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()]
    completion = rollout.completion_ids[row][: int(rollout.completion_mask[row].sum())]
    ids = torch.cat([prompt, completion]).unsqueeze(0)
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1).gather(1, completion.unsqueeze(1)).squeeze(1)


def test_one_epoch_of_two_minibatches_weights_the_second_by_the_sampling_policy(tmp_path):
    """mu = 1, minibatches = 2, against the objective written out by hand (GRPO, sequence aggregation).

    The second optimizer step sees a policy the first step moved, so its ratio
    rho = pi_theta1 / pi_theta0 is not 1: tokens outside [1 - eps, 1 + eps] in
    the advantage's direction are clipped (no gradient) and the others weighted
    by rho. Treating the second minibatch as on-policy (rho = 1) gives another update.
    """
    from grpo.models import load_model
    from grpo.rollout import sample_groups

    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in ("one", "two more words")]
    rollout = sample_groups(model, tokenizer, prompts, 2, 5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    advantages = torch.tensor([1.0, -1.0, -0.7, 0.7])
    cfg = tiny_config(tmp_path, prompts_per_step=2, group_size=2, minibatches=2, mu=1, beta=0.0, temperature=1.0,
                      max_new_tokens=5, max_grad_norm=0.0, loss_aggregation="sequence", eps_low=0.2, eps_high=0.2)
    lr = 20.0
    start = {k: v.clone() for k, v in model.state_dict().items()}

    # By hand: two SGD steps on the clipped objective, minibatch order as policy_update draws it.
    torch.manual_seed(3)
    first, second = torch.randperm(2).tolist()
    with torch.no_grad():
        sampling = {row: row_logprobs(model, rollout, row) for row in range(4)}
    clipped_tokens = 0
    for group in (first, second):
        model.zero_grad()
        loss = 0.0
        for row in (2 * group, 2 * group + 1):
            ratio = torch.exp(row_logprobs(model, rollout, row) - sampling[row])
            surrogate = torch.min(ratio * advantages[row], torch.clamp(ratio, 0.8, 1.2) * advantages[row])
            loss = loss - surrogate.mean() / 2  # (1/N) sum_i (1/|o_i|) sum_t, N = 2 rows per minibatch
            clipped_tokens += int(((ratio > 1.2) & (advantages[row] > 0) | (ratio < 0.8) & (advantages[row] < 0)).sum())
        loss.backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter -= lr * parameter.grad
    by_hand = {k: v.clone() for k, v in model.state_dict().items()}
    assert clipped_tokens > 0, "the example must clip something in the second step"

    model.load_state_dict(start)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    old_logprobs = trainer.sampling_logprobs(model, rollout, cfg)
    assert old_logprobs is not None, "two optimizer steps per rollout need the sampling policy's log-probs"
    torch.manual_seed(3)
    stats = trainer.policy_update(model, optimizer, scheduler, rollout, rollout.completion_mask, advantages,
                                  old_logprobs, None, cfg)
    for key in by_hand:
        assert torch.allclose(model.state_dict()[key], by_hand[key], atol=1e-5), key
    assert stats["clip_region"][0] == 0.0 and stats["clip_region"][1] > 0.0


def test_logged_kl_clip_ratios_and_entropy_do_not_depend_on_micro_batch_size(tmp_path):
    """The statistics are means over the minibatch's tokens, checked against a direct computation.

    Completions of 1 to 6 tokens make a row share differ from a token share.
    """
    from grpo.loss import kl_estimate
    from grpo.models import load_model
    from grpo.rollout import Rollout, sample_groups

    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in ("one", "two words")]
    sampled = sample_groups(model, tokenizer, prompts, 4, 6, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([1, 6, 2, 5, 6, 1, 3, 6])
    mask = (torch.arange(sampled.completion_ids.shape[1]) < lengths.unsqueeze(1)).float()
    rollout = Rollout(sampled.prompt_ids, sampled.prompt_mask, sampled.completion_ids, mask, sampled.truncated)
    advantages = torch.randn(8, generator=torch.Generator().manual_seed(1))
    cfg = tiny_config(tmp_path, beta=0.04, lr=1e-3, max_grad_norm=0.0)
    with torch.no_grad():
        logprobs, entropy = trainer.rollout_logprobs(model, rollout, cfg, with_entropy=True)
    noise = torch.Generator().manual_seed(2)
    old_logprobs = logprobs + 0.3 * torch.randn(logprobs.shape, generator=noise)
    ref_logprobs = logprobs + 0.5 * torch.randn(logprobs.shape, generator=noise)

    ratio = torch.exp(logprobs - old_logprobs)
    low = (ratio < 0.8) & (advantages.unsqueeze(1) < 0)
    high = (ratio > 1.2) & (advantages.unsqueeze(1) > 0)
    tokens = mask.sum()
    expected = {"kl": float((kl_estimate(logprobs, ref_logprobs, "k3") * mask).sum() / tokens),
                "clip_low": float((low * mask).sum() / tokens), "clip_high": float((high * mask).sum() / tokens),
                "clip_region": float(((low | high) * mask).sum() / tokens),
                "entropy": float((entropy * mask).sum() / tokens)}
    assert 0 < expected["clip_region"] < 1 and expected["clip_low"] > 0 and expected["clip_high"] > 0

    start = {k: v.clone() for k, v in model.state_dict().items()}
    for micro, share in ((0, True), (4, True), (2, False), (1, False)):
        model.load_state_dict(start)
        cfg = tiny_config(tmp_path, beta=0.04, lr=1e-3, max_grad_norm=0.0, micro_batch_size=micro,
                          share_prompt_pass=share)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        stats = trainer.policy_update(model, optimizer, scheduler, rollout, mask, advantages, old_logprobs,
                                      ref_logprobs, cfg)
        for key, value in expected.items():
            assert stats[key] == [pytest.approx(value, rel=1e-5)], (micro, key)
