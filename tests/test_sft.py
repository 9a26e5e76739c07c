"""Tests for the SFT baseline (baselines/sft.py) on the tiny random Llama with SmolLM2's tokenizer."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from baselines.sft import (
    SFTConfig,
    TokenizedExample,
    accumulate_gradients,
    collate,
    completion_token_logprobs,
    dev_loss,
    micro_batches,
    sft_loss,
    tokenize_example,
    total_steps,
    train_sft,
)
from grpo.config import GRPOConfig
from grpo.run import lora
from grpo.run.checkpoint import latest_checkpoint
from grpo.run.config import load_config
from grpo.run.data import make_examples
from grpo.run.errors import ConfigError
from grpo.run.guards import TooManySkippedSteps
from grpo.run.metrics import read_metrics
from grpo.run.models import load_model

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("sft_mt", "sft_hg", "cold_start_mt", "cold_start_hg")

RECORDS = [
    {"id": "r1", "source": "ཡུ་ཨན་", "target": "人民币"},
    {"id": "r2", "source": "ཨ་རིའི་སྒོར་", "target": "美元"},
    {"id": "r3", "source": "བོད་ཡིག་ནི་བོད་པའི་ཡི་གེ་ཡིན།", "target": "藏文是藏族的文字。"},
    {"id": "r4", "source": "ཟླ་བ་དང་པོ།", "target": "一月"},
]


def examples_of(tokenizer, records=RECORDS):
    return make_examples(records, tokenizer, task="mt", source_lang="bo", target_lang="zh")


def write_data(folder: Path, with_dev: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS)
    (folder / "train.jsonl").write_text(lines, encoding="utf-8")
    if with_dev:
        (folder / "dev.jsonl").write_text(lines, encoding="utf-8")
    return folder


def sft_config(tmp_path: Path, **overrides) -> SFTConfig:
    values = dict(out_dir=str(tmp_path / "sft"), model="tiny-random-llama", data=str(write_data(tmp_path / "data")),
                  batch_size=4, micro_batch_size=2, max_steps=6, eval_every=0, lr=1e-2, warmup_steps=0,
                  dev_limit=0, seed=0, eval_max_new_tokens=4)
    values.update(overrides)
    return load_config(SFTConfig, overrides=values)


# --------------------------------------------------------------------------
# Tokens and batches
# --------------------------------------------------------------------------
def test_completion_is_target_then_eos_and_a_cut_target_loses_eos(tiny):
    _, tokenizer = tiny
    example = examples_of(tokenizer)[2]
    target_ids = tokenizer(example["target"], add_special_tokens=False).input_ids
    assert len(target_ids) >= 3

    whole = tokenize_example(tokenizer, example, max_target_tokens=len(target_ids) + 1)
    assert whole.completion_ids == target_ids + [tokenizer.eos_token_id]
    assert tokenizer.convert_ids_to_tokens(whole.completion_ids[-1]) == "<|im_end|>"  # the chat end-of-turn
    assert whole.prompt_ids == tokenizer(example["prompt"], add_special_tokens=False).input_ids
    assert not whole.truncated

    cut = tokenize_example(tokenizer, example, max_target_tokens=2)
    assert cut.completion_ids == target_ids[:2]
    assert cut.truncated


def test_collate_pads_prompts_left_and_completions_right():
    batch = collate([TokenizedExample([5, 6, 7], [1, 2], False), TokenizedExample([8], [3, 4, 5], False)], pad_id=0)
    assert batch.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.completion_ids.tolist() == [[1, 2, 0], [3, 4, 5]]
    assert batch.completion_mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]


def test_micro_batches_group_similar_lengths():
    lengths = [9, 2, 7, 4]
    examples = [TokenizedExample([1] * n, [2], False) for n in lengths]
    split = micro_batches(examples, 2)
    assert [[e.num_tokens for e in micro] for micro in split] == [[3, 5], [8, 10]]


# --------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------
def hand_nll(model, tokenizer, example) -> tuple[float, int]:
    """Sum of -log p over the target tokens and EOS, from one unpadded full-logits pass."""
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False).input_ids
    target_ids = tokenizer(example["target"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = prompt_ids + target_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()  # [L, V]
    logp = torch.log_softmax(logits, dim=-1)
    # The token at position t is predicted by the logits at position t - 1.
    nll = -sum(logp[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids)))
    return nll, len(target_ids)


def test_sft_loss_scores_only_completion_tokens(tiny):
    model, tokenizer = tiny
    examples = examples_of(tokenizer)[:3]
    sums, counts = zip(*(hand_nll(model, tokenizer, e) for e in examples))
    expected = sum(sums) / sum(counts)

    batch = collate([tokenize_example(tokenizer, e, 64) for e in examples], tokenizer.pad_token_id)
    with torch.no_grad():
        logprobs = completion_token_logprobs(model, batch, load_config(SFTConfig, overrides={"logprob_chunk_tokens": 7}))
    loss = sft_loss(logprobs, batch.completion_mask, batch.completion_mask.sum().item())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_mixed_precision_bf16_runs_the_sft_forward_under_autocast(tiny):
    # The key is shared with GRPO (RunConfig); SFT must honour it, not ignore it.
    model, tokenizer = tiny
    batch = collate([tokenize_example(tokenizer, e, 64) for e in examples_of(tokenizer)[:2]], tokenizer.pad_token_id)
    seen = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        with torch.no_grad():
            full = completion_token_logprobs(model, batch, load_config(SFTConfig))
            mixed = completion_token_logprobs(model, batch, load_config(SFTConfig, overrides={"mixed_precision": "bf16"}))
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    # Log-probs stay float32 and close to the fp32 pass: bf16 rounds activations, it does not change the model.
    assert mixed.dtype == torch.float32 and not torch.equal(mixed, full)
    mask = batch.completion_mask.bool()
    assert torch.allclose(mixed[mask], full[mask], atol=0.1)


def test_gradient_accumulation_equals_one_big_batch(fresh_tiny):
    model, tokenizer = fresh_tiny
    batch = [tokenize_example(tokenizer, e, 64) for e in examples_of(tokenizer)]

    def loss_and_grads(micro_batch_size: int):
        cfg = load_config(SFTConfig, overrides=dict(batch_size=4, micro_batch_size=micro_batch_size))
        model.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, batch, cfg, tokenizer.pad_token_id)
        return loss, [p.grad.clone() for p in model.parameters()]

    loss_whole, grads_whole = loss_and_grads(0)
    for micro_batch_size in (2, 1):
        loss_split, grads_split = loss_and_grads(micro_batch_size)
        assert loss_split == pytest.approx(loss_whole, rel=1e-5)
        for whole, split in zip(grads_whole, grads_split):
            torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------
def test_config_checks_and_epoch_step_count():
    with pytest.raises(ConfigError, match="'micro_batch_size' must be >= 0 and divide batch_size = 6"):
        load_config(SFTConfig, overrides=dict(batch_size=6, micro_batch_size=4))
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        load_config(SFTConfig, overrides=dict(batch_size=6, grad_accum_steps=4))
    # the former key still loads, as the micro-batch it meant
    former = load_config(SFTConfig, overrides=dict(batch_size=8, grad_accum_steps=4))
    assert (former.micro_batch_size, former.grad_accum_steps) == (2, 0)
    cfg = load_config(SFTConfig, overrides=dict(batch_size=4, epochs=2, max_steps=100))
    assert total_steps(cfg, 10) == math.ceil(2 * 10 / 4) == 5
    assert total_steps(load_config(SFTConfig, overrides=dict(max_steps=7)), 10) == 7


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    cfg = load_config(SFTConfig, REPO_ROOT / "configs" / f"{preset}.toml")
    assert cfg.out_dir == f"runs/{preset.replace('_', '-')}"
    assert cfg.task == preset[-2:]


def test_a_few_steps_lower_the_loss_and_the_final_checkpoint_loads(tmp_path):
    cfg = sft_config(tmp_path, max_steps=8, dev_limit=4)
    run_dir = train_sft(cfg)

    assert (run_dir / "config.toml").is_file()
    assert load_config(SFTConfig, run_dir / "config.toml") == cfg
    assert (run_dir / "eval" / "step-000000.jsonl").is_file()
    rows = read_metrics(run_dir / "metrics.jsonl")
    eval_losses = [row["eval/loss"] for row in rows if "eval/loss" in row]
    train_losses = [row["loss"] for row in rows if "loss" in row]
    assert len(train_losses) == 8
    # The dev set is the training set: eight steps at lr 1e-2 fit it visibly.
    assert eval_losses[-1] < eval_losses[0] - 1.0
    assert train_losses[-1] < train_losses[0] - 1.0

    final = run_dir / "final"
    assert final.resolve() == latest_checkpoint(run_dir).resolve() == (run_dir / "checkpoints" / "step-000008").resolve()
    model, tokenizer = load_model(str(final))
    dev = [tokenize_example(tokenizer, e, cfg.max_target_tokens) for e in examples_of(tokenizer)]
    nll = dev_loss(model, dev, cfg, tokenizer.pad_token_id)
    assert nll.sum() / sum(len(e.completion_ids) for e in dev) == pytest.approx(eval_losses[-1], rel=1e-5)
    # Every dev evaluation also measures the greedy outputs, as GRPO's does.
    last_eval = [row for row in rows if "eval/loss" in row][-1]
    assert {"eval/distinct_ratio", "eval/top_share", "eval/target_language", "eval/chrf"} <= set(last_eval)
    eval_rows = [json.loads(line) for line in (run_dir / "eval" / "step-000008.jsonl").read_text().splitlines()]
    assert all({"output", "targets", "length_ratio", "loss"} <= set(row) for row in eval_rows)


def test_resume_continues_exactly(tmp_path):
    """A run interrupted after step 3 and resumed ends where an uninterrupted run ends."""
    cfg = sft_config(tmp_path, max_steps=6, save_every=3, dev_limit=4, lora_r=4, lora_alpha=8.0, lora_dropout=0.1)
    run_dir = train_sft(cfg)
    uninterrupted = read_metrics(run_dir / "metrics.jsonl")

    # Forget everything after the step-3 checkpoint, then continue.
    shutil.rmtree(run_dir / "checkpoints" / "step-000006")
    assert latest_checkpoint(run_dir).name == "step-000003"
    train_sft(load_config(SFTConfig, overrides={**vars(cfg), "resume": "auto"}))
    resumed = read_metrics(run_dir / "metrics.jsonl")

    # The resumed run replaced the lines after its checkpoint and reproduced them.
    assert [row for row in resumed if row["step"] <= 3] == [row for row in uninterrupted if row["step"] <= 3]
    for key in ("loss", "eval/loss"):
        before = [(row["step"], row[key]) for row in uninterrupted if row["step"] > 3 and key in row]
        after = [(row["step"], row[key]) for row in resumed if row["step"] > 3 and key in row]
        assert before and [step for step, _ in after] == [step for step, _ in before]
        assert [value for _, value in after] == pytest.approx([value for _, value in before], rel=1e-6)


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path):
    # A step of 1e30 leaves weights whose next backward pass overflows: the gradient norm turns inf.
    cfg = sft_config(tmp_path, lr=1e30, max_grad_norm=0.0, max_steps=10, max_skipped_steps=2)
    with pytest.raises(TooManySkippedSteps):
        train_sft(cfg)
    rows = [row for row in read_metrics(Path(cfg.out_dir) / "metrics.jsonl") if "loss" in row]
    assert [(row["step"], row["skipped_updates"]) for row in rows] == [(1, 0), (2, 1)]
    assert rows[1]["grad_norm"] is None  # the logger writes a non-finite value as null
    # The weights of the last good step are kept: step 3 was skipped too, and saved.
    assert latest_checkpoint(cfg.out_dir).name == "step-000003"


@pytest.mark.skipif(not hasattr(lora, "merge_and_unload"),
                    reason="needs grpo.run.lora.merge_and_unload, which load_model uses to merge an adapter it starts from")
@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_grpo_from_sft_checkpoint_uses_it_as_reference(tmp_path, lora_r):
    """GRPO started from an SFT checkpoint has KL 0 to its reference at step 1: the reference is the SFT model.

    With LoRA the reference is the adapter-disabled network, so the SFT adapter
    must be merged into the base before GRPO's fresh adapter goes on top.
    """
    from grpo.config import build_reward_from_config
    from grpo.trainer import train

    sft_run = train_sft(sft_config(tmp_path, max_steps=4, lora_r=lora_r, lora_alpha=8.0))
    data_file = write_data(tmp_path / "grpo-data", with_dev=False) / "train.jsonl"
    # The length reward needs no encoder: the test is about the reference, not the reward.
    grpo_cfg = load_config(GRPOConfig, overrides=[
        f"out_dir={tmp_path / 'grpo'}", f"model={sft_run / 'final'}", f"data={data_file}",
        f"lora_r={lora_r}", "lora_alpha=8.0", "beta=0.1", "max_steps=1", "prompts_per_step=2", "group_size=2",
        "max_new_tokens=6", "reward_weights={length=1.0}", "lr=1e-3", "seed=0",
    ])
    run_dir = train(grpo_cfg, build_reward_from_config(grpo_cfg))
    step_one = [row for row in read_metrics(run_dir / "metrics.jsonl") if row["step"] == 1 and "kl" in row][0]
    assert step_one["kl"] == pytest.approx(0.0, abs=1e-6)


def test_sft_logs_to_tensorboard_through_the_same_logger(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = sft_config(tmp_path, max_steps=2, dev_limit=4, eval_every=1, report_to=["tensorboard"])
    run_dir = train_sft(cfg)
    rows = read_metrics(run_dir / "metrics.jsonl")
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    for tag in ("loss", "eval/loss", "grad_norm"):
        logged = [(row["step"], row[tag]) for row in rows if tag in row]
        assert [(e.step, e.value) for e in accumulator.Scalars(tag)] == [(s, pytest.approx(v)) for s, v in logged]
    assert [e.step for e in accumulator.Scalars("eval/loss")] == [0, 1, 2]


def test_a_checkpoint_with_one_rng_state_for_every_rank_still_resumes(tmp_path):
    # SFT checkpoints written before GRPO and SFT shared one resume path hold a single RNG state, not a list.
    import torch

    from grpo.run import checkpoint as ckpt
    from grpo.run.training_run import Checkpointer, ExampleSampler, RunPlace

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    sampler = ExampleSampler(5, seed=0)
    torch.manual_seed(123)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "sampler": {"epoch": 1, "index": 2}, "rng": ckpt.rng_state(), "step": 4}
    expected = torch.rand(3)
    place = RunPlace(cfg=None, requested=None, rank=0, world_size=1, run_dir=tmp_path, resume_from=None)
    assert Checkpointer(place, model, None, optimizer, scheduler, sampler).restore(state) == 4
    assert torch.equal(torch.rand(3), expected)
    assert sampler.state() == {"epoch": 1, "index": 2}
