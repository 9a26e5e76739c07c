"""Bad input and odd settings: refused before the work starts, in one line naming the file, key or value.

Each test is one promise, tried through the command line's own `main` as a
user would meet the fault (helpers from conftest).

  - a prompt longer than the model can take is named by file and line at data load
  - a run folder that cannot be written is named in one line: read-only, a file, a TensorBoard folder
  - a preset file is a preset, even when its path holds '='
  - a custom reward module that fails at import is named with its file, line and error
  - alignment_tax checks its drift texts before any model is evaluated
  - an encoder whose tokenizer is a placeholder is refused for what it is
  - a reward too large for float32 is counted as a failure; an lr that stops training is said, not hidden
  - Python's `random` is seeded from `seed`, so a reward that uses it repeats between fresh runs
"""

import errno
import json
import os
from pathlib import Path

import pytest

from conftest import error_line, grpo_args, grpo_main_with, run_cli
from grpo import trainer
from grpo.cli import main as grpo_main
from grpo.config import GRPOConfig
from grpo.run.metrics import read_metrics
from rewards.base import RewardOutput

pytestmark = pytest.mark.usefixtures("repo_root")  # presets and data/ are read relative to the repository


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def pair(source: str, target: str = "你好") -> str:
    return json.dumps({"source": source, "target": target}, ensure_ascii=False)


# ------------------------------------------------------------ prompt length
def test_a_prompt_beyond_the_models_positions_is_named_by_file_and_line(tmp_path, capsys):
    train = write_jsonl(tmp_path / "data" / "train.jsonl",
                        [pair("hello"), "", pair("good morning"), pair("hello " * 2100), pair("thanks")])
    args = grpo_args(tmp_path / "run", f"data={train.parent}", "max_prompt_tokens=0", "max_steps=1")
    error_line(*run_cli(capsys, args)[::2], f"{train}:4: the prompt has ", "tokens; the model takes 2044 (2048 "
               "positions less max_new_tokens = 4)", "set max_prompt_tokens = 2044 to leave such examples out")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

    code, out, err = run_cli(capsys, [*args, "max_prompt_tokens=2044"])  # ... which leaves it out, counted
    assert code == 0, err
    assert f"{train}: 1 of 4 examples have prompts over 2044 tokens and are left out" in out


# -------------------------------------------------------------- file system
def test_an_out_dir_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder\n")
    error_line(*run_cli(capsys, grpo_args(tmp_path / "run"))[::2],
               f"out_dir '{tmp_path / 'run'}' is a file, not a folder; choose another out_dir")


def test_an_out_dir_on_a_read_only_file_system_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "mnt" / "run"
    real_mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "mnt")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    error_line(*run_cli(capsys, grpo_args(out))[::2],
               f"out_dir '{out}' cannot be written (Read-only file system: '", "choose another out_dir")


def test_an_unwritable_tensorboard_folder_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the folders were checked")

    monkeypatch.setattr(trainer, "load_model", load_model)
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("a file where the TensorBoard folder goes\n")
    error_line(*run_cli(capsys, grpo_args(out, 'report_to=["tensorboard"]'))[::2],
               f"the TensorBoard folder '{out / 'tensorboard'}' is not a writable folder (Not a directory)")


def test_a_later_write_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    def run(cfg):
        raise PermissionError(errno.EACCES, "Permission denied", f"{cfg.out_dir}/eval/step-000001.jsonl")

    error_line(*run_cli(capsys, grpo_args(tmp_path / "run"), lambda argv: grpo_main(argv, run=run))[::2],
               f"cannot write '{tmp_path / 'run'}/eval/step-000001.jsonl' (Permission denied); no checkpoint had "
               "been written yet: make it writable, then start again with overwrite=true")


# ---------------------------------------------------------------- presets
def test_a_preset_whose_path_holds_an_equals_sign_is_the_preset(tmp_path, capsys):
    preset = tmp_path / "runs" / "lr=1e-4" / "config.toml"
    preset.parent.mkdir(parents=True)
    preset.write_text("group_size = 4\nlr = 1e-4\n", encoding="utf-8")
    seen = []
    code = grpo_main([str(preset), "max_steps=3"], run=seen.append)
    assert code == 0, capsys.readouterr().err
    assert (seen[0].group_size, seen[0].lr, seen[0].max_steps) == (4, 1e-4, 3)
    assert seen[0].model == GRPOConfig().model


# ------------------------------------------------------------ custom rewards
@pytest.mark.parametrize("body, line, error", [
    ("def reward(prompts, completions, examples:\n    return [0.0] * len(completions)\n", 1, "has a syntax error"),
    ("import math\nSCALE = 1 / 0\n", 2, "failed while being imported"),
], ids=["syntax-error", "raises-at-import"])
def test_a_custom_reward_module_that_fails_at_import_is_one_line(tmp_path, capsys, monkeypatch, body, line, error):
    name = f"broken_reward_{line}"
    (tmp_path / f"{name}.py").write_text(body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    error_line(*run_cli(capsys, grpo_args(tmp_path / "run", f"custom_reward={name}:reward"))[::2],
               f"the custom reward module '{name}' {error}", f"{tmp_path / name}.py:{line}: ")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ------------------------------------------------------------ alignment tax
def test_alignment_tax_refuses_an_empty_drift_texts_file_before_any_evaluation(tmp_path, capsys):
    from test_alignment_tax import write_suite

    from eval.alignment_tax import main

    empty = tmp_path / "drift-empty.jsonl"
    empty.write_text("", encoding="utf-8")
    suite = write_suite(tmp_path / "suite.toml", extra=f'[drift_empty]\nkind = "drift"\ntexts = "{empty}"\n')
    args = ["--base", "tiny-random-llama", "--tuned", "tiny-random-llama", "--suite", str(suite),
            "--out", str(tmp_path / "out"), "--quiet"]
    error_line(*run_cli(capsys, args, main)[::2], f"{suite}: drift probe [drift_empty]: data file '{empty}' is empty")
    assert not (tmp_path / "out").exists(), "a model was evaluated first"


# ------------------------------------------------------------ reward encoder
def test_an_encoder_with_a_placeholder_tokenizer_is_refused_for_what_it_is(tmp_path, capsys):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "five-tokens"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    (tmp_path / "vocab.txt").write_text("\n".join(specials) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(folder)
    line = error_line(*run_cli(capsys, grpo_args(tmp_path / "run", f"encoder={folder}",
                                                 "reward_weights={semantic=1.0}"))[::2],
                      "cannot read 100% of the characters", "its tokenizer has only 5 tokens, too few to read any "
                      "language", "max_unread_target_chars=1")
    assert "target language" not in line


# ------------------------------------------------------------ large values
class HugeFirstReward:
    """1e300 for the first sample of every call (finite in float64, inf in float32), 0.5 for the others."""

    name = "custom"

    def __call__(self, prompts, completions, examples):
        values = [1e300] + [0.5] * (len(completions) - 1)
        return RewardOutput(values, {"custom": values})


def test_a_reward_beyond_float32_is_counted_as_a_failure(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=1", "dev_limit=0"), grpo_main_with(HugeFirstReward()))
    assert code == 0, err
    (row,) = [row for row in read_metrics(out / "metrics.jsonl") if "reward_failures" in row]
    assert row["reward_failures"] == 1 and row["reward"] == 0.5


def test_an_lr_that_stops_every_update_is_warned_about_once(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"step 2: every optimizer step was skipped .* the run stops after "
                                         r"max_skipped_steps = 5 in a row") as caught:
        code, _, err = run_cli(capsys, grpo_args(out, "max_steps=4", "lr=1e30"))
    assert code == 0, err
    assert len([w for w in caught if "every optimizer step was skipped" in str(w.message)]) == 1
    # ... and stops after max_skipped_steps, as for NaN.
    code, _, err = run_cli(capsys, grpo_args(tmp_path / "other", "max_steps=4", "lr=1e30", "max_skipped_steps=2"))
    error_line(code, err, "2 consecutive optimizer steps had a non-finite loss or gradient norm")


def test_an_lr_torch_cannot_apply_is_refused_in_one_line(tmp_path, capsys):
    error_line(*run_cli(capsys, grpo_args(tmp_path / "run", "lr=1e38"))[::2],
               "config key 'lr' must be small enough for AdamW's first step")
    assert not (tmp_path / "run").exists()


def test_a_step_that_leaves_a_weight_infinite_stops_the_run():
    import torch

    from grpo.run.guards import NonFiniteGuard, NonFiniteWeights
    from grpo.run.training_run import clip_and_step

    class Overflows(torch.optim.SGD):
        def step(self, closure=None):
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))  # what fp16 weights do under a huge lr

    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer = Overflows(model.parameters(), lr=1e4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(NonFiniteWeights, match=r"an optimizer step left weights that are inf or NaN \(lr = 10000\); "
                                               "nothing trained from them can be used, and they are not saved"):
        clip_and_step(model, optimizer, scheduler, 1.0, 1.0, NonFiniteGuard(5))


# ------------------------------------------------------------------ seeds
class RandomReward:
    """A reward drawn from Python's `random`, recording what it drew."""

    name = "custom"

    def __init__(self):
        self.drawn = []

    def __call__(self, prompts, completions, examples):
        import random

        values = [random.random() for _ in completions]
        self.drawn.extend(values)
        return RewardOutput(values, {"custom": values})


def test_a_reward_using_python_random_repeats_between_fresh_runs(tmp_path, capsys):
    import random

    drawn = []
    for attempt in range(2):
        random.seed(1000 + attempt)  # whatever the process did before
        reward = RandomReward()
        code, _, err = run_cli(capsys, grpo_args(tmp_path / f"run{attempt}", "max_steps=2"), grpo_main_with(reward))
        assert code == 0, err
        drawn.append(reward.drawn)
    assert drawn[0] == drawn[1] and len(drawn[0]) > 4
