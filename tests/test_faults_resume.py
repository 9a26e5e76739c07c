"""Nothing lost, nothing run: what resuming, overwriting and stopping promise.

Each test is one promise, tried through the command line's own `main` as a
user would meet the fault (helpers from conftest).

  - a resume folder cannot run code: the trainer state is read weights-only
  - overwrite=true replaces only what a run writes, and never a live run in a subfolder
  - SIGTERM finishes the step, saves it and says how to continue (exit 143); a second one stops at once
  - a resume checks the data files' content, not only their names
  - resume=auto says when there is nothing to resume
  - a checkpoint of this version without its manifest is damaged, not "older"
  - when no checkpoint verifies, the advice fits the command given
"""

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import HOLD_LOCK, ROOT, Scores, env, error_line, grpo_args, grpo_main_with, run_cli, state_of
from grpo.run import checkpoint as ckpt
from grpo.run.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("repo_root")  # presets and data/ are read relative to the repository


@pytest.fixture
def one_step_run(tmp_path, capsys):
    """A finished 1-step run, with its checkpoint."""
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=1"))
    assert code == 0, err
    return out


# ------------------------------------------------------ code in a state file
class RunsACommand:
    """What a tampered trainer state carries: unpickling it calls os.system."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_tampered_trainer_state_is_refused_and_runs_nothing(one_step_run, tmp_path, capsys):
    checkpoint = one_step_run / "checkpoints" / "step-000001"
    marker = tmp_path / "the-command-ran"
    state = torch.load(checkpoint / ckpt.STATE_FILE, weights_only=False)  # written by this test: trusted
    torch.save({**state, "extra": RunsACommand(f"touch {marker}")}, checkpoint / ckpt.STATE_FILE)
    ckpt.write_manifest(checkpoint)  # whoever edits the file rewrites the manifest too

    code, _, err = run_cli(capsys, grpo_args(one_step_run, "max_steps=2", "resume=auto"))
    error_line(code, err, f"checkpoint {checkpoint}: {ckpt.STATE_FILE} refers to posix.system",
               "it was not loaded, since unpickling it could run code")
    assert not marker.exists(), "loading the trainer state ran the command"


def test_a_trainer_state_holds_only_tensors_and_plain_values(one_step_run):
    path = one_step_run / "checkpoints" / "step-000001" / ckpt.STATE_FILE
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []


def test_an_older_trainer_state_with_numpy_rng_arrays_still_loads(tmp_path):
    folder = tmp_path / "step-000001"
    folder.mkdir()
    older = {**ckpt.rng_state(), "numpy": np.random.get_state()}  # the tuple with an ndarray key
    torch.save({"rng": [older], "step": 1}, folder / ckpt.STATE_FILE)
    expected = np.random.rand()
    ckpt.set_rng_state(ckpt.load_trainer_state(folder)["rng"][0])
    assert np.random.rand() == expected


# ---------------------------------------------------------- overwrite=true
def test_overwrite_replaces_the_runs_own_entries_and_names_the_rest(one_step_run, capsys):
    (one_step_run / "notes.md").write_text("why this run\n", encoding="utf-8")
    (one_step_run / "plots").mkdir()
    (one_step_run / "plots" / "reward.png").write_bytes(b"png")
    mine = {name: data for name, data in state_of(one_step_run).items() if name.startswith(("notes", "plots"))}

    code, out, err = run_cli(capsys, grpo_args(one_step_run, "overwrite=true", "max_steps=2"))
    assert code == 0, err
    assert f"overwrite=true replaces the run in '{one_step_run}'; left in place, since no run writes them: " \
           "notes.md, plots" in out
    after = state_of(one_step_run)
    assert {name: after.get(name) for name in mine} == mine
    assert [p.name for p in (one_step_run / "checkpoints").iterdir()] == ["step-000002"]


def test_overwrite_is_refused_while_a_subfolder_holds_a_live_run(one_step_run, capsys):
    inner = one_step_run / "inner"
    inner.mkdir()
    (inner / "metrics.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(inner)], cwd=ROOT, env=env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = state_of(one_step_run)
        error_line(*run_cli(capsys, grpo_args(one_step_run, "overwrite=true", "max_steps=1"))[::2],
                   f"overwrite=true refused: '{inner}' inside out_dir '{one_step_run}' holds a run that is still "
                   f"going (pid {holder.pid})")
        assert state_of(one_step_run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Once it has ended, the overwrite goes ahead and leaves the subfolder alone.
    code, _, err = run_cli(capsys, grpo_args(one_step_run, "overwrite=true", "max_steps=1"))
    assert code == 0, err
    assert (inner / "metrics.jsonl").read_text(encoding="utf-8") == '{"step": 1}\n'


# ------------------------------------------------------------------ SIGTERM
def sigterm_at_call(*calls: int):
    """A reward hook that sends this process SIGTERM at the given reward calls (1: dev evaluation at step 0)."""
    count = []

    def hook():
        count.append(1)
        for _ in range(calls.count(len(count))):
            os.kill(os.getpid(), signal.SIGTERM)

    return Scores(hook)


def test_sigterm_saves_the_step_and_says_how_to_continue(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=4"), grpo_main_with(sigterm_at_call(3)))  # in step 2
    assert code == 143, err
    step2 = out / "checkpoints" / "step-000002"
    assert err.endswith(f"\nstopped by SIGTERM after step 2; continue from {step2} with resume=auto\n"), err
    assert ckpt.verify_checkpoint(step2)

    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=4", "resume=auto"), grpo_main_with(Scores()))
    assert code == 0, err
    assert [row["step"] for row in read_metrics(out / "metrics.jsonl") if "reward" in row] == [1, 2, 3, 4]


def test_a_second_sigterm_stops_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, "max_steps=4"), grpo_main_with(sigterm_at_call(3, 3)))
    assert code == 130, err
    assert err.endswith("\ninterrupted before the first checkpoint: there is nothing to resume. "
                        "Start again with overwrite=true\n"), err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the run


# ------------------------------------------------------- what a resume checks
def test_a_data_file_edited_in_place_refuses_the_resume(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "mt", data)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, grpo_args(out, f"data={data}", "max_steps=1"))
    assert code == 0, err
    train = data / "train.jsonl"
    text = train.read_text(encoding="utf-8")
    train.write_text(text.replace("人民币", "人民幣", 1), encoding="utf-8")  # one character, the same size

    error_line(*run_cli(capsys, grpo_args(out, f"data={data}", "max_steps=2", "resume=auto"))[::2],
               f"cannot resume from {out / 'checkpoints' / 'step-000001'}: the train data '{train}' has other "
               "content than when the checkpoint was written", "Put the file back as it was")
    train.write_text(text, encoding="utf-8")
    code, _, err = run_cli(capsys, grpo_args(out, f"data={data}", "max_steps=2", "resume=auto"))
    assert code == 0, err


def test_resume_auto_with_no_run_says_it_starts_fresh(tmp_path, capsys):
    out = tmp_path / "runs" / "grpo-mt-typo"
    code, stdout, err = run_cli(capsys, grpo_args(out, "max_steps=1", "resume=auto"))
    assert code == 0, err
    assert f"resume=auto: no run to resume in '{out}'; starting fresh" in stdout


def test_a_checkpoint_without_its_manifest_is_damaged_not_older(one_step_run, tmp_path, capsys):
    step1 = one_step_run / "checkpoints" / "step-000001"
    (step1 / ckpt.MANIFEST_FILE).unlink()
    error_line(*run_cli(capsys, grpo_args(one_step_run, "max_steps=2", "resume=auto"))[::2],
               f"no checkpoint of '{one_step_run}' verifies (step-000001: {ckpt.MANIFEST_FILE} is missing")
    error_line(*run_cli(capsys, grpo_args(tmp_path / "other", f"resume={step1}"))[::2],
               f"checkpoint {step1} is damaged: {ckpt.MANIFEST_FILE} is missing")

    # One written before manifests existed (no "format" in its state) is still used, and said so.
    state = ckpt.load_trainer_state(step1)
    del state["format"]
    torch.save(state, step1 / ckpt.STATE_FILE)
    assert ckpt.verify_checkpoint(step1) is False


def test_no_intact_checkpoint_under_overwrite_true_advises_leaving_resume_auto_off(one_step_run, capsys):
    (one_step_run / "checkpoints" / "step-000001" / ckpt.STATE_FILE).write_bytes(b"")
    line = error_line(*run_cli(capsys, grpo_args(one_step_run, "max_steps=1", "resume=auto", "overwrite=true"))[::2],
                      f"no checkpoint of '{one_step_run}' verifies", "run the same command without resume=auto")
    assert "start again with overwrite=true" not in line
