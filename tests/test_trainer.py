"""Integration: the whole GRPO loop on the tiny random Llama."""


import dataclasses
import math

import numpy as np
import pytest
import torch

from conftest import ROOT, env, tiny_config
from grpo import trainer
from grpo.config import build_reward_from_config
from grpo.run.metrics import read_metrics
from rewards.base import RewardOutput

pytestmark = pytest.mark.usefixtures("repo_root")  # presets and data/ are read relative to the repository

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


def train_with_configured_reward(cfg):
    """`trainer.train` with the reward the config describes, as `python -m grpo` builds it."""
    return trainer.train(cfg, build_reward_from_config(cfg))


@pytest.mark.slow
def test_grpo_raises_a_learnable_reward(tmp_path, tiny):
    _, tokenizer = tiny
    cfg = tiny_config(tmp_path, max_steps=14, prompts_per_step=4, group_size=8, max_new_tokens=8, lr=2e-2,
                      beta=0.0, loss_aggregation="token-mean")
    trainer.train(cfg, LowHalfShare(tokenizer))
    rewards = [row["reward"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward" in row]
    assert len(rewards) == 14
    assert np.mean(rewards[-4:]) > np.mean(rewards[:4]) + 0.1, rewards


def test_every_metric_is_logged_and_first_step_kl_is_zero(tmp_path, tiny):
    _, tokenizer = tiny
    cfg = tiny_config(tmp_path, eval_every=1)
    trainer.train(cfg, LowHalfShare(tokenizer))
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


def test_every_step_logs_each_phase_against_its_floor_and_prints_the_line(tmp_path, tiny, capsys):
    _, tokenizer = tiny
    trainer.train(tiny_config(tmp_path, max_steps=3, log_utilisation_every=2), LowHalfShare(tokenizer))
    steps = [row for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward" in row]
    for row in steps:  # a reference pass and no old log-probs (mu = 1): logprob is one forward pass
        assert 0 < row["utilisation/generate"] < 1 and 0 < row["utilisation/logprob"] < 1
        assert 0 < row["utilisation/update"] < 1
    printed = [line for line in "".join(capsys.readouterr()).split("\n") if "utilisation:" in line]
    assert [line.split(" utilisation:")[0].split("step ")[-1] for line in printed] == ["1", "2"]
    assert "of its roofline" in printed[0] and "of the matmul peak (measured: " in printed[0]


def test_several_inner_epochs_use_old_logprobs(tmp_path, tiny):
    _, tokenizer = tiny
    trainer.train(tiny_config(tmp_path, max_steps=1, mu=3, minibatches=2, lr=1e-2), LowHalfShare(tokenizer))
    (row,) = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward" in r]
    # 6 updates from one rollout: the later ones see a moved policy
    assert row["kl"] > 0.0
    assert row["clip_ratio/region_mean"] > 0.0


def test_checkpoint_reloads_as_a_model(tmp_path):
    from grpo.run.models import load_model

    cfg = tiny_config(tmp_path, max_steps=1, lora_r=4, lora_alpha=8.0)
    run_dir = train_with_configured_reward(cfg)
    folder = run_dir / "checkpoints" / "step-000001"
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    model, _ = load_model(str(folder))
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_refuses_to_overwrite_a_run(tmp_path):
    from grpo.run.errors import ConfigError

    train_with_configured_reward(tiny_config(tmp_path, max_steps=1))
    with pytest.raises(ConfigError, match="already holds a run"):
        train_with_configured_reward(tiny_config(tmp_path, max_steps=1))


def test_micro_batches_give_the_same_update_as_one_batch(tmp_path):
    # policy_update with micro-batches vs the whole minibatch at once
    from grpo.rollout import sample_groups
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in ("one", "two words")]
    rollout = sample_groups(model, tokenizer, prompts, 4, 6, generator=torch.Generator().manual_seed(0))
    advantages = torch.randn(8, generator=torch.Generator().manual_seed(1))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    results = []
    for aggregation in ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"):
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


# --------------------------------------------------------------------------- logging, rewards and loss options
def completion_table(run_dir, step):
    import json

    return [json.loads(line) for line in open(run_dir / "completions" / f"step-{step:06d}.jsonl", encoding="utf-8")]


def test_smoke_with_tensorboard_and_completion_tables_then_plot(tmp_path):
    """`python -m grpo configs/smoke.toml` (make smoke) with TensorBoard and completion tables, then the plot."""
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "smoke"
    subprocess.run([sys.executable, "-m", "grpo", "configs/smoke.toml", 'report_to=["tensorboard"]',
                    "log_completions_every=1", f"out_dir={run_dir}"],
                   cwd=ROOT, env=env(), check=True, capture_output=True, timeout=600)
    rows = read_metrics(run_dir / "metrics.jsonl")
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    logged = [(row["step"], row["reward"]) for row in rows if "reward" in row]
    assert [(e.step, e.value) for e in accumulator.Scalars("reward")] == [(s, pytest.approx(v)) for s, v in logged]
    assert [e.step for e in accumulator.Scalars("eval/reward")] == [0, 2]  # the dev evaluation, same logger
    assert len(accumulator.Tensors("completions/text_summary")) == 2
    for step in (1, 2):
        table = completion_table(run_dir, step)
        assert len(table) == 2 * 4  # prompts_per_step x group_size of configs/smoke.toml
        assert set(table[0]) == {"step", "group", "id", "prompt", "target", "completion", "terms", "reward",
                                 "advantage", "length", "truncated"}
        assert set(table[0]["terms"]) == {"semantic", "semantic/cosine", "language"}
        step_row = next(row for row in rows if row["step"] == step and "reward" in row)
        assert np.mean([r["reward"] for r in table]) == pytest.approx(step_row["reward"], abs=1e-6)

    result = subprocess.run([sys.executable, "-m", "grpo.run.plot", str(run_dir)], cwd=ROOT, env=env(),
                            capture_output=True, text=True, check=True)
    assert result.stdout == f"wrote {run_dir / 'curves.png'}\n"
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_custom_rewards_normalised_then_summed(tmp_path):
    """Each term is logged, and the advantages are GDPO's, recomputed by hand from the logged terms."""
    weights = {"low_half": 1.0, "ascii": 0.5, "language": 2.0}
    cfg = tiny_config(tmp_path, max_steps=2, reward_weights=weights, scale_rewards="none", std_offset=1e-4,
                      custom_rewards={"low_half": "support_rewards:low_half_share",
                                      "ascii": "support_rewards:ascii_share"},
                      reward_normalization="normalize_then_sum", log_completions_every=1)
    train_with_configured_reward(cfg)
    run_dir = tmp_path / "run"
    steps = [row for row in read_metrics(run_dir / "metrics.jsonl") if "reward" in row]
    for step_row in steps:
        table = completion_table(run_dir, step_row["step"])
        terms = {name: np.array([row["terms"][name] for row in table]) for name in weights}
        for name, values in terms.items():
            assert step_row[f"rewards/{name}/mean"] == pytest.approx(values.mean(), abs=1e-6)
        total = sum(weight * terms[name] for name, weight in weights.items())
        assert [row["reward"] for row in table] == pytest.approx(total, abs=1e-6)

        def by_group(values):
            return values.reshape(-1, cfg.group_size)

        gdpo = sum(weight * (by_group(terms[name]) - by_group(terms[name]).mean(axis=1, keepdims=True))
                   / (by_group(terms[name]).std(axis=1, ddof=1, keepdims=True) + 1e-4)
                   for name, weight in weights.items()).flatten()
        summed_first = (by_group(total) - by_group(total).mean(axis=1, keepdims=True)).flatten()
        advantages = np.array([row["advantage"] for row in table])
        assert advantages == pytest.approx(gdpo, abs=1e-4)
        assert not np.allclose(advantages, summed_first, atol=1e-3)  # what sum_then_normalize would give


def test_overlong_penalty_is_a_logged_reward_term(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, max_new_tokens=6, overlong_buffer=4,
                      reward_weights={"language": 1.0, "overlong": 0.5}, log_completions_every=2)
    train_with_configured_reward(cfg)
    run_dir = tmp_path / "run"
    assert not (run_dir / "completions" / "step-000001.jsonl").exists()  # every 2 steps
    table = completion_table(run_dir, 2)
    # L_max = 6, L_buf = 4: 0 up to 2 tokens, then -1/4 a token down to -1 at 6
    expected = [min(0.0, (2 - row["length"]) / 4) for row in table]
    assert [row["terms"]["overlong"] for row in table] == pytest.approx(expected)
    assert min(expected) < 0
    assert [row["reward"] for row in table] == pytest.approx(
        [row["terms"]["language"] + 0.5 * row["terms"]["overlong"] for row in table])
    step_two = [row for row in read_metrics(run_dir / "metrics.jsonl") if row["step"] == 2 and "reward" in row][0]
    assert step_two["rewards/overlong/mean"] == pytest.approx(np.mean(expected))


def test_delta_stops_the_gradient_of_tokens_far_above_the_ratio_cap(tmp_path):
    # old log-probs 2 below the current ones: rho = e^2 = 7.4 on every token. With every advantage
    # negative and delta = 3 every token is capped, so the update has no gradient; without delta it has.
    from grpo.rollout import sample_groups
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "one"}], tokenize=False,
                                           add_generation_prompt=True)
    rollout = sample_groups(model, tokenizer, [prompt], 4, 6, generator=torch.Generator().manual_seed(0))
    advantages = -torch.ones(4)
    results = {}
    for delta in (0.0, 3.0):
        cfg = tiny_config(tmp_path, prompts_per_step=1, beta=0.0, delta=delta, max_grad_norm=0.0, mu=2)
        with torch.no_grad():
            old_logprobs = trainer.rollout_logprobs(model, rollout, cfg).logprobs - 2.0
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # measure the gradient, keep the weights
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        results[delta] = trainer.policy_update(model, optimizer, scheduler, rollout, rollout.completion_mask,
                                               advantages, old_logprobs, None, cfg)
    assert min(results[0.0].grad_norm) > 0 and results[0.0].clip_delta == []
    assert results[3.0].grad_norm == [0.0, 0.0]
    assert results[3.0].clip_delta == [1.0, 1.0]


def step_metrics(run_dir) -> list[dict]:
    return [row for row in read_metrics(run_dir / "metrics.jsonl") if "reward" in row]


def test_generation_key_selects_the_static_sampler_and_changes_no_step(tmp_path, monkeypatch, tiny):
    # The static sampler draws the eager one's tokens here (logits within 1e-5, the same noise), so the
    # two runs log the same rewards and losses; the spy shows that generation=static was not ignored.
    from grpo.static_rollout import StaticSampler

    _, tokenizer = tiny
    calls = []
    sample = StaticSampler.__call__
    monkeypatch.setattr(StaticSampler, "__call__", lambda self, *a, **k: calls.append(self) or sample(self, *a, **k))
    runs = {}
    for generation in ("eager", "static"):
        trainer.train(tiny_config(tmp_path / generation, generation=generation), LowHalfShare(tokenizer))
        runs[generation] = step_metrics(tmp_path / generation / "run")
    assert len(calls) == 2 and calls[0] is calls[1]  # one sampler, kept from step to step
    for eager, static in zip(runs["eager"], runs["static"]):
        for key in ("reward", "loss", "kl", "completions/mean_length", "grad_norm"):
            assert static[key] == eager[key], key


def test_gradient_checkpointing_run_matches_the_plain_run(tmp_path, monkeypatch, tiny):
    _, tokenizer = tiny
    checkpointed_layers = []
    wrap = trainer.checkpoint_decoder_layers
    monkeypatch.setattr(trainer, "checkpoint_decoder_layers", lambda model: checkpointed_layers.append(wrap(model)))
    runs = {}
    for flag in (False, True):
        trainer.train(tiny_config(tmp_path / str(flag), gradient_checkpointing=flag), LowHalfShare(tokenizer))
        runs[flag] = step_metrics(tmp_path / str(flag) / "run")
    assert checkpointed_layers == [2]
    for plain, checkpointed in zip(runs[False], runs[True]):
        for key in ("reward", "loss", "kl", "grad_norm"):
            assert checkpointed[key] == pytest.approx(plain[key], rel=1e-6, abs=1e-9), key


def test_bf16_lora_recipe_trains_with_static_generation_and_checkpointing(tmp_path, tiny):
    # The paper's recipe on the tiny model: bf16 base, fp32 adapters, bf16 autocast, the static sampler
    # with bf16 generation weights, gradient checkpointing.
    _, tokenizer = tiny
    cfg = tiny_config(tmp_path, dtype="bfloat16", lora_r=4, lora_alpha=8.0, mixed_precision="bf16",
                      generation="static", gradient_checkpointing=True)
    trainer.train(cfg, LowHalfShare(tokenizer))
    rows = step_metrics(tmp_path / "run")
    assert len(rows) == 2 and all(np.isfinite(row["loss"]) and row["grad_norm"] > 0 for row in rows)
    assert rows[1]["kl"] > 0  # the adapters moved the policy away from the bf16 base


def row_logprobs(model, rollout, row: int) -> torch.Tensor:
    """log pi(o_t | q, o_<t) [n] of one row's completion tokens: one unpadded forward pass, temperature 1."""
    prompt = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()]
    completion = rollout.completion_ids[row][: int(rollout.completion_mask[row].sum())]
    ids = torch.cat([prompt, completion]).unsqueeze(0)
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1).gather(1, completion.unsqueeze(1)).squeeze(1)


def test_one_epoch_of_two_minibatches_weights_the_second_by_the_sampling_policy(tmp_path):
    """mu = 1, minibatches = 2, against the objective written out by hand (GRPO, seq-mean-token-mean aggregation).

    The second optimizer step sees a policy the first step moved, so its ratio
    rho = pi_theta1 / pi_theta0 is not 1: tokens outside [1 - eps, 1 + eps] in
    the advantage's direction are clipped (no gradient) and the others weighted
    by rho. Treating the second minibatch as on-policy (rho = 1) gives another update.
    """
    from grpo.rollout import sample_groups
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in ("one", "two more words")]
    rollout = sample_groups(model, tokenizer, prompts, 2, 5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    advantages = torch.tensor([1.0, -1.0, -0.7, 0.7])
    cfg = tiny_config(tmp_path, prompts_per_step=2, group_size=2, minibatches=2, mu=1, beta=0.0, temperature=1.0,
                      max_new_tokens=5, max_grad_norm=0.0, loss_aggregation="seq-mean-token-mean", eps_low=0.2, eps_high=0.2)
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
    assert stats.clip_region[0] == 0.0 and stats.clip_region[1] > 0.0


def test_logged_kl_clip_ratios_and_entropy_do_not_depend_on_micro_batch_size(tmp_path):
    """The statistics are means over the minibatch's tokens, checked against a direct computation.

    Completions of 1 to 6 tokens make a row share differ from a token share.
    """
    from grpo.loss import kl_estimate
    from grpo.rollout import Rollout, sample_groups
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in ("one", "two words")]
    sampled = sample_groups(model, tokenizer, prompts, 4, 6, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([1, 6, 2, 5, 6, 1, 3, 6])
    mask = (torch.arange(sampled.completion_ids.shape[1]) < lengths.unsqueeze(1)).float()
    rollout = Rollout(sampled.prompt_ids, sampled.prompt_mask, sampled.completion_ids, mask, sampled.truncated,
                      sampled.sampler_logprobs * mask)
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
            assert getattr(stats, key) == [pytest.approx(value, rel=1e-5)], (micro, key)


def test_the_sampler_correction_is_the_identity_for_equal_weights_and_the_hand_computed_weight_otherwise(tmp_path):
    """Equal weights: ratio 1, the loss of no correction. A sampler that under-rated every token by
    0.5 nats: weight exp(0.5) on the surrogate (beta = 0, mu = 1: the loss is -mean(w A)), or the cap."""
    from grpo.rollout import sample_groups
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in ("one", "two words")]
    cfg = tiny_config(tmp_path, beta=0.0, lr=1e-3, max_grad_norm=0.0, loss_aggregation="token-mean")
    rollout = sample_groups(model, tokenizer, prompts, 4, 6, temperature=cfg.temperature,
                            generator=torch.Generator().manual_seed(0))
    advantages = torch.randn(8, generator=torch.Generator().manual_seed(1))
    mask = rollout.completion_mask
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def update(correction, cap=2.0, sampler_shift=0.0):
        model.load_state_dict(start)
        run_cfg = tiny_config(tmp_path, beta=0.0, lr=1e-3, max_grad_norm=0.0, loss_aggregation="token-mean",
                              sampler_correction=correction, sampler_correction_cap=cap)
        shifted = dataclasses.replace(rollout, sampler_logprobs=(rollout.sampler_logprobs - sampler_shift) * mask)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        return trainer.policy_update(model, optimizer, scheduler, shifted, mask, advantages, None, None, run_cfg)

    # The sampler's cached decode and the trainer's full pass agree to float32 rounding (~1e-5 in a
    # log-prob), so the weights are 1 to that precision; the loss is a mean of terms of size |A| ~ 1.
    plain = update("none")
    assert plain.sampler_ratio == [pytest.approx(1.0, abs=1e-5)] and plain.sampler_kl[0] < 1e-9
    for level in ("token", "sequence"):
        same = update(level)
        assert same.loss == [pytest.approx(plain.loss[0], abs=2e-5)] and same.sampler_capped == [0.0]
    token = update("token", sampler_shift=0.5)
    assert token.loss == [pytest.approx(math.exp(0.5) * plain.loss[0], abs=5e-5)]
    assert token.sampler_ratio == [pytest.approx(math.exp(0.5), rel=1e-5)] and token.sampler_capped == [0.0]
    capped = update("token", cap=1.5, sampler_shift=0.5)
    assert capped.loss == [pytest.approx(1.5 * plain.loss[0], abs=2e-5)] and capped.sampler_capped == [1.0]
