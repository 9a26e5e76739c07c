"""Nothing lost, nothing run: what resuming, overwriting and stopping promise.

Each test is one promise, tried through the command line's own `main` as a
user would meet the fault (helpers from test_faults).

  - a resume folder cannot run code: the trainer state is read weights-only
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from grpo import checkpoint as ckpt
from test_faults import error_line, grpo_args, repo_root, run_cli  # noqa: F401 - repo_root is an autouse fixture


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
