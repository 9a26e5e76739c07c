"""Nothing lost, nothing silent: what a run promises when the input is bad or the machine misbehaves.

Each test is one promise, tried as a user would meet the fault, through the
command line's own `main` where the user would see a message. A refusal is
one line starting with "error:", with no traceback, naming the file or key
and what to do; nothing the user had is lost.

Bad input
  - a UTF-8 byte-order mark at the start of a data or config file is not data
  - every float setting must be finite
  - a reward encoder folder without a tokenizer is refused
  - an encoder that cannot read the training targets stops the run before training, unless overridden
  - on resume a setting either may change (it takes effect and is reported) or the resume is refused, naming it
  - alignment_tax checks every model, and that the tokenizers match, before any evaluation
  - every entry point answers --help, and a malformed key=value is one line

Damage and interruptions
  - a damaged checkpoint file is named in one line; resume=auto passes over it to the newest intact one
  - flipped bytes in a checkpoint are caught by its manifest
  - a torn last line of metrics.jsonl is dropped on resume, and said so
  - a full disk names the checkpoint being written and leaves the previous one intact
  - two processes never share a run folder; a killed one does not block the next
  - overwrite=true keeps the old run until the new one has a checkpoint
  - Ctrl-C says what is true: where to resume from, or that there is nothing to resume

The kills with SIGKILL (during a checkpoint, during its manifest) are in test_resume.py.
"""

import errno
import fcntl
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import HOLD_LOCK, ROOT, Scores, comparable, env, error_line, grpo_args, grpo_main_with, run_cli, state_of
from grpo import trainer
from grpo.cli import main as grpo_main
from grpo.config import GRPOConfig
from grpo.run import checkpoint as ckpt
from grpo.run import run_folder, training_run
from grpo.run.config import load_config, to_dict
from grpo.run.errors import CheckpointError, ConfigError, DataError
from grpo.run.metrics import MetricsLogger, read_metrics

pytestmark = pytest.mark.usefixtures("repo_root")  # presets and data/ are read relative to the repository

# ============================================================== bad input
def test_a_utf8_bom_is_not_part_of_the_data_for_grpo_and_sft(tmp_path, tiny):
    from baselines.sft import SFTConfig

    _, tokenizer = tiny
    data = tmp_path / "data"
    data.mkdir()
    lines = '{"source": "ཀ་ཁ", "target": "甲乙"}\r\n{"source": "ག", "target": "丙"}\r\n'
    for split in ("train", "dev"):
        (data / f"{split}.jsonl").write_bytes(b"\xef\xbb\xbf" + lines.encode("utf-8"))
    for config_class in (GRPOConfig, SFTConfig):
        train, dev = training_run.load_task_examples(load_config(config_class, overrides={"data": str(data)}), tokenizer)
        assert [e["source"] for e in train] == [e["source"] for e in dev] == ["ཀ་ཁ", "ག"]
        assert train[0]["target"] == "甲乙"
    preset = tmp_path / "preset.toml"
    preset.write_bytes(b"\xef\xbb\xbfgroup_size = 4\r\n")
    assert load_config(GRPOConfig, preset).group_size == 4


def float_keys():
    from dataclasses import fields

    from baselines.sft import SFTConfig

    return sorted({f.name for cls in (GRPOConfig, SFTConfig) for f in fields(cls) if f.type in (float, "float")})


@pytest.mark.parametrize("key", float_keys())
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_setting_must_be_finite(key, value):
    from baselines.sft import SFTConfig

    config_class = GRPOConfig if key in GRPOConfig.__dataclass_fields__ else SFTConfig
    with pytest.raises(ConfigError, match=rf"config key '{key}' must be finite; got -?(inf|nan)"):
        load_config(config_class, overrides=[f"{key}={value}"])


def test_lr_inf_and_an_infinite_reward_weight_are_refused_in_one_line(tmp_path, capsys):
    error_line(*run_cli(capsys, grpo_args(tmp_path / "run", "lr=inf"))[::2], "config key 'lr' must be finite; got inf")
    error_line(*run_cli(capsys, grpo_args(tmp_path / "run", "reward_weights={semantic=inf}"))[::2],
               "config key 'reward_weights' must be finite")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def encoder_folders(tmp_path_factory):
    """Two tiny BERT encoders: one saved without its tokenizer, one whose tokenizer knows only ASCII."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("encoders")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789.,!?"]
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root / "no-tokenizer")
    BertModel(config).save_pretrained(root / "ascii-only")
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root / "ascii-only")
    return root


def test_an_encoder_folder_without_a_tokenizer_is_refused(encoder_folders, tmp_path, capsys):
    folder = encoder_folders / "no-tokenizer"
    error_line(*run_cli(capsys, grpo_args(tmp_path / "run", f"encoder={folder}", "reward_weights={semantic=1.0}"))[::2],
               f"reward encoder folder '{folder}' has no tokenizer", "tokenizer.save_pretrained")


def test_an_encoder_that_cannot_read_the_targets_stops_before_training_unless_overridden(encoder_folders, tmp_path,
                                                                                         capsys):
    folder = encoder_folders / "ascii-only"
    args = grpo_args(tmp_path / "run", f"encoder={folder}", "reward_weights={semantic=1.0}", "max_steps=1")
    code, _, err = run_cli(capsys, args)
    error_line(code, err, f"reward encoder '{folder} [mean pooling]' cannot read 100% of the characters",
               "max_unread_target_chars=1")
    assert not (tmp_path / "run" / "metrics.jsonl").exists(), "it refused only after training had started"

    code, _, err = run_cli(capsys, [*args, "max_unread_target_chars=1.0"])
    assert code == 0, err
    assert [row["step"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward" in row] == [1]


# -------------------------------------------------------------- resume rule
@pytest.fixture
def two_step_run(tmp_path, capsys):
    """A finished 2-step run with a checkpoint after each step."""
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=2", "save_every=1"))
    assert code == 0, err
    return out


def test_a_changed_lr_on_resume_is_refused_and_the_recorded_config_kept(two_step_run, capsys):
    recorded = (two_step_run / "config.toml").read_bytes()
    code, _, err = run_cli(capsys, grpo_args(two_step_run, "max_steps=3", "resume=auto", "lr=0.5"))
    line = error_line(code, err, f"cannot resume from {two_step_run / 'checkpoints' / 'step-000002'}",
                      "lr: checkpoint 0.01, now 0.5", "Only ", "max_steps")
    assert "max_steps: checkpoint" not in line  # an allowed change is not a reason to refuse
    assert (two_step_run / "config.toml").read_bytes() == recorded


def test_a_safe_change_on_resume_takes_effect_and_is_reported(two_step_run, capsys):
    code, out, err = run_cli(capsys, grpo_args(two_step_run, "max_steps=3", "resume=auto", "save_every=3"))
    assert code == 0, err
    assert "changed on resume: max_steps: checkpoint 2, now 3; save_every: checkpoint 1, now 3" in out
    assert [row["step"] for row in read_metrics(two_step_run / "metrics.jsonl") if "reward" in row] == [1, 2, 3]
    assert load_config(GRPOConfig, two_step_run / "config.toml").max_steps == 3  # the config that ran


@pytest.mark.parametrize("key, value", [("lr", 0.5), ("length_min", 2), ("temperature", 0.5), ("seed", 7),
                                        ("device", "cuda"), ("lora_alpha", 4.0), ("mu", 2)])
def test_every_other_key_refuses_the_resume(key, value):
    # Keys the old resume check ignored: a change to any of them was silently dropped.
    cfg = load_config(GRPOConfig)
    saved = {**to_dict(cfg), key: value}
    with pytest.raises(ConfigError, match=f"config differs in {key}: checkpoint {value!r}, now"):
        training_run.check_resume_matches(cfg, saved, Path("ckpt"))
    assert training_run.check_resume_matches(cfg, {**to_dict(cfg), "eval_every": 1, "resume": "x"},
                                        Path("ckpt")) == ["eval_every: checkpoint 1, now 10"]


# ------------------------------------------------------------ alignment tax
@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """The tiny model with a tokenizer of the same size in which two tokens swapped ids."""
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    folder = tmp_path_factory.mktemp("other-tokenizer")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab["the"], vocab["Ġthe"] = vocab["Ġthe"], vocab["the"]
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


def test_alignment_tax_refuses_a_tuned_model_with_another_tokenizer(other_tokenizer_model, tmp_path, capsys):
    from test_alignment_tax import write_suite

    from eval.alignment_tax import main

    args = ["--base", "tiny-random-llama", "--tuned", str(other_tokenizer_model), "--suite",
            str(write_suite(tmp_path / "suite.toml")), "--out", str(tmp_path / "out"), "--quiet"]
    error_line(*run_cli(capsys, args, main)[::2], f"tuned model '{other_tokenizer_model}' does not use the base "
               "model's tokenizer: 2 tokens have another id", "'the'")
    assert not (tmp_path / "out").exists(), "the base model was evaluated first"


def test_alignment_tax_names_a_missing_tuned_folder_before_any_work(tmp_path, capsys):
    from test_alignment_tax import write_suite

    from eval.alignment_tax import main

    missing = tmp_path / "runs" / "grpo-typo"
    args = ["--base", "tiny-random-llama", "--tuned", "tiny-random-llama", str(missing), "--suite",
            str(write_suite(tmp_path / "suite.toml")), "--out", str(tmp_path / "out"), "--quiet"]
    error_line(*run_cli(capsys, args, main)[::2], f"--tuned '{missing}' does not exist")
    assert not (tmp_path / "out").exists(), "the base model was evaluated first"


# ------------------------------------------------------------ entry points
def test_sft_and_the_evaluations_import_the_runtime_and_not_the_grpo_loop():
    code = ("import importlib, pkgutil, sys, baselines.sft\n"
            "for module in pkgutil.iter_modules(['eval']): importlib.import_module('eval.' + module.name)\n"
            "print(sorted(name for name in sys.modules if name in ('grpo.trainer', 'grpo.cli')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_importing_the_packages_leaves_the_environment_alone(monkeypatch):
    clean = {key: value for key, value in env().items() if key != "HF_HUB_OFFLINE"}
    code = "import os, grpo.trainer, baselines.sft, eval.alignment_tax; print(os.environ.get('HF_HUB_OFFLINE'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert result.stdout.strip() == "None", result.stderr
    # the loader reads the variable when it loads: the local cache only, unless it says 0
    from grpo.run.models import hub_offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()


ENTRY_POINTS = ["grpo", "baselines.sft", "eval.alignment_tax", "eval.judge", "eval.reproduce", "grpo.tau",
                "eval.hacking", "eval.train_summary", "grpo.run.plot",
                "grpo.run.models", "bench.grpo_step", "bench.vs_trl", "bench.logprob_memory", "bench.random_model",
                "data/build_mt.py", "data/build_hg.py", "data/build_general.py"]


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_answers_help(entry, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [entry, "--help"])
    try:
        if entry.endswith(".py"):
            runpy.run_path(str(ROOT / entry), run_name="__main__")
        else:
            runpy.run_module(entry, run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        assert exit.code in (0, None), capsys.readouterr().err
    out, err = capsys.readouterr()
    assert len(out) > 40 and "Traceback" not in err, (out, err)


def test_bench_refuses_a_malformed_key_value_in_one_line(capsys):
    from bench.grpo_step import main

    error_line(*run_cli(capsys, ["steps"], main)[::2], "override 'steps' is not of the form key=value")
    error_line(*run_cli(capsys, ["steps=many"], main)[::2], "bench option 'steps' takes an integer >= 1; got 'many'")


# ================================================= damage and interruptions
@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A checkpoint of the tiny model written by save_checkpoint, with a small trainer state."""
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    run_dir = tmp_path_factory.mktemp("saved")
    return ckpt.save_checkpoint(run_dir, 3, model, tokenizer, {"config": {}, "note": torch.arange(1000)})


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbled": lambda data: bytes(len(data)),
    "missing": None,
}


def damage(path: Path, kind: str) -> None:
    if DAMAGE[kind] is None:
        path.unlink()
    else:
        path.write_bytes(DAMAGE[kind](path.read_bytes()))


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("file", [ckpt.STATE_FILE, "model.safetensors"])
def test_a_damaged_checkpoint_file_is_named_in_one_line(saved_checkpoint, tmp_path, file, kind):
    from grpo.run.models import load_model

    folder = tmp_path / "step-000003"
    shutil.copytree(saved_checkpoint, folder)
    assert ckpt.verify_checkpoint(folder)
    damage(folder / file, kind)
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(folder))} is damaged: {file} "
                                              r"(is missing|has \d+ bytes|has changed since it was written)") as caught:
        ckpt.verify_checkpoint(folder)
    assert "\n" not in str(caught.value)

    # A checkpoint written before manifests existed: loading it names the file instead of a raw traceback.
    (folder / ckpt.MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"checkpoint {re.escape(str(folder))} is damaged: ") as caught:
        if file == ckpt.STATE_FILE:
            ckpt.load_trainer_state(folder)
        else:
            ckpt.load_policy_weights(load_model("tiny-random-llama")[0], folder)
    assert "\n" not in str(caught.value) and (file in str(caught.value) or "model weights" in str(caught.value))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4, and its final weights and metrics."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert grpo_main(grpo_args(out, "max_steps=4", "save_every=2")) == 0
    finally:
        os.chdir(cwd)
    return out, load_file(out / "final" / "model.safetensors"), read_metrics(out / "metrics.jsonl")


def flip_bytes(path: Path) -> None:
    """Invert 4096 bytes in the middle of a file; its size stays the same."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(255 - b for b in data[middle : middle + 4096])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("file, harm", [("model.safetensors", flip_bytes),
                                        (ckpt.STATE_FILE, lambda path: damage(path, "truncated"))],
                         ids=["flipped-weights", "truncated-state"])
def test_resume_auto_passes_over_a_damaged_checkpoint_and_says_so(finished_run, tmp_path, capsys, file, harm):
    finished, final_weights, metrics = finished_run
    out = tmp_path / "run"
    shutil.copytree(finished, out, symlinks=True)
    harm(out / "checkpoints" / "step-000004" / file)

    code, stdout, err = run_cli(capsys, grpo_args(out, "max_steps=4", "save_every=2", "resume=auto"))
    assert code == 0, err
    assert f"checkpoint {out / 'checkpoints' / 'step-000004'} is damaged: {file}" in stdout
    assert f"resuming from {out / 'checkpoints' / 'step-000002'}, the newest checkpoint that verifies" in stdout
    # Steps 3 and 4 were trained again from step 2: the same weights and metrics as the undamaged run.
    resumed = load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(resumed[key], final_weights[key]) for key in final_weights)
    assert comparable(metrics) == comparable(read_metrics(out / "metrics.jsonl"))


def test_an_explicitly_named_damaged_checkpoint_is_refused_and_no_intact_one_is_an_error(finished_run, tmp_path,
                                                                                       capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out, symlinks=True)
    step4 = out / "checkpoints" / "step-000004"
    flip_bytes(step4 / "model.safetensors")
    error_line(*run_cli(capsys, grpo_args(tmp_path / "other", f"resume={step4}"))[::2],
               f"checkpoint {step4} is damaged: model.safetensors has changed since it was written",
               "resume from another checkpoint")
    damage(out / "checkpoints" / "step-000002" / ckpt.STATE_FILE, "empty")
    error_line(*run_cli(capsys, grpo_args(out, "max_steps=4", "resume=auto"))[::2],
               f"no checkpoint of '{out}' verifies (step-000004: model.safetensors has changed",
               "step-000002: trainer_state.pt has 0 bytes", "overwrite=true")


def test_a_torn_last_metrics_line_is_dropped_on_resume_and_said_so(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out, symlinks=True)
    kept = (out / "metrics.jsonl").read_text(encoding="utf-8")
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "reward": 0.4')  # what a power cut leaves mid-line

    code, stdout, err = run_cli(capsys, grpo_args(out, "max_steps=4", "save_every=2", "resume=auto"))
    assert code == 0, err
    assert f"{out / 'metrics.jsonl'}: dropped its last line, torn by an interrupted write" in stdout
    assert (out / "metrics.jsonl").read_text(encoding="utf-8") == kept


def test_a_damaged_metrics_line_before_the_last_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.jsonl:2: not a JSON line .*delete or repair that line"):
        MetricsLogger(tmp_path, 3, truncate_after=3)


# ------------------------------------------------------------- full disk
def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def disk_fills_at_step_2(obj, path, *args, **kwargs):
        if ".tmp-step-000002" in str(path):
            Path(path).write_bytes(b"\0" * 1000)  # as far as the writer got
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_at_step_2)
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=3", "save_every=1"))
    step1, step2 = out / "checkpoints" / "step-000001", out / "checkpoints" / "step-000002"
    error_line(code, err, f"disk full: checkpoint {step2} could not be written (OSError: [Errno 28] No space left on "
               f"device); the previous checkpoint {step1} is intact: free space, then continue with resume=auto")
    assert ckpt.verify_checkpoint(step1)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]  # the partial folder is gone

    monkeypatch.setattr(torch, "save", real_save)  # space freed
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=3", "save_every=1", "resume=auto"))
    assert code == 0, err
    assert ckpt.latest_checkpoint(out).name == "step-000003"


def test_a_full_disk_reported_as_unexpected_pos_is_recognised(saved_checkpoint, tmp_path, monkeypatch):
    from collections import namedtuple

    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    run_dir = tmp_path / "run"
    shutil.copytree(saved_checkpoint.parent, run_dir / "checkpoints")

    def torch_writer_fails(obj, path, *args, **kwargs):
        # What torch's zip writer raises when a write comes up short on a full disk.
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 15488 vs 15380")

    monkeypatch.setattr(torch, "save", torch_writer_fails)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 0))
    with pytest.raises(CheckpointError, match=r"disk full: checkpoint .*step-000004 could not be written "
                                              r"\(RuntimeError: .*unexpected pos 15488 vs 15380\); the previous "
                                              r"checkpoint .*step-000003 is intact"):
        ckpt.save_checkpoint(run_dir, 4, model, tokenizer, {})
    # With space left the same failure is something else, and is not disguised.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**9, 10**12 - 10**9))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        ckpt.save_checkpoint(run_dir, 4, model, tokenizer, {})


def test_a_full_disk_outside_a_checkpoint_is_one_line(tmp_path, capsys):
    def run(cfg):
        raise OSError(errno.ENOSPC, "No space left on device")

    error_line(*run_cli(capsys, grpo_args(tmp_path / "run"), lambda argv: grpo_main(argv, run=run))[::2],
               "disk full (No space left on device); no checkpoint had been written yet")


# ------------------------------------------------------------- the run lock
def test_a_second_process_on_the_same_out_dir_is_refused_and_a_killed_one_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=ROOT, env=env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        error_line(*run_cli(capsys, grpo_args(out, "max_steps=1"))[::2],
                   f"out_dir '{out}' is in use by another run (pid {holder.pid}); wait for it to end")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / run_folder.LOCK_FILE).read_text().strip() == str(holder.pid)  # the stale lock file is still there
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=1"))
    assert code == 0, err


def test_a_run_holds_its_lock_while_it_trains(tmp_path):
    out = tmp_path / "run"
    seen = []

    def try_the_lock():
        with open(out / run_folder.LOCK_FILE) as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")

    trainer.train(load_config(GRPOConfig, overrides=grpo_args(out, "max_steps=2")), Scores(try_the_lock))
    assert len(seen) >= 2 and set(seen) == {"held"}  # at every step (and dev evaluation)
    try_the_lock()
    assert seen[-1] == "free", "the lock outlived the run"


# ----------------------------------------------------- overwrite=true
@pytest.fixture
def old_run(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=1"))
    assert code == 0, err
    return out, state_of(out)


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(old_run, capsys):
    out, before = old_run
    error_line(*run_cli(capsys, grpo_args(out, "overwrite=true", "data=data/mt-typo"))[::2], "data/mt-typo")
    error_line(*run_cli(capsys, grpo_args(out, "overwrite=true", "model=tiny-random-lama"))[::2], "tiny-random-lama")
    assert state_of(out) == before


def test_overwrite_puts_the_old_run_back_if_the_new_one_stops_before_its_first_checkpoint(old_run, capsys):
    out, before = old_run
    code, stdout, err = run_cli(capsys, grpo_args(out, "overwrite=true", "max_steps=3",
                                                  "custom_reward=support_rewards:always_raises"))
    error_line(code, err, "samples could not be scored")
    assert "the run it was to replace is back in place, untouched" in stdout
    assert state_of(out) == before


def test_overwrite_replaces_the_old_run_once_the_new_one_has_a_checkpoint(old_run, capsys):
    out, before = old_run
    code, _, err = run_cli(capsys, grpo_args(out, "overwrite=true", "max_steps=2"))
    assert code == 0, err
    assert not (out / run_folder.REPLACED).exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
    assert state_of(out)["config.toml"] != before["config.toml"]


def test_an_overwrite_killed_before_its_first_checkpoint_is_undone_at_the_next_start(old_run):
    out, before = old_run
    # What a SIGKILL leaves: the old run set aside, the new run's first files written, no checkpoint yet.
    run_folder.lock(out)
    run_folder.replace_on_start(out)
    run_folder.start(out)
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "checkpoints" / ".tmp-step-000001").mkdir(parents=True)
    run_folder._claims.pop(run_folder._key(out)).lock_file.close()  # the process dies holding nothing

    run_folder.lock(out)
    run_folder.release(out)
    assert state_of(out) == before


# ------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, capsys):
    def interrupt():
        raise KeyboardInterrupt

    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=3"), grpo_main_with(Scores(interrupt)))
    assert code == 130
    assert err.endswith("\ninterrupted before the first checkpoint: there is nothing to resume. "
                        "Start again with overwrite=true\n"), err
    # ... and it is true:
    error_line(*run_cli(capsys, grpo_args(out, "max_steps=3", "resume=auto"), grpo_main_with(Scores(interrupt)))[::2],
               "holds a run without a checkpoint to resume from; pass overwrite=true")


def test_ctrl_c_after_a_checkpoint_says_where_to_resume_from(tmp_path, capsys):
    calls = []

    def interrupt_at_step_2():
        calls.append(1)
        if len(calls) == 3:  # dev evaluation at step 0, step 1 (then its checkpoint), step 2
            raise KeyboardInterrupt

    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=3", "save_every=1"), grpo_main_with(Scores(interrupt_at_step_2)))
    assert code == 130
    assert err.endswith(f"\ninterrupted; continue from {out / 'checkpoints' / 'step-000001'} with resume=auto\n"), err
