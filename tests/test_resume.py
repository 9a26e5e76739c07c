"""Resume exactly: a run killed with SIGKILL after a checkpoint, or while writing one, and resumed matches an
uninterrupted run."""

import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, comparable, env, run_args
from grpo.run.metrics import read_metrics


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 6-step run of run_args, never interrupted."""
    whole = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run(run_args(whole), cwd=ROOT, env=env(), check=True, capture_output=True)
    return whole


def assert_same_run(resumed, whole):
    """The same metrics (timings aside) and bitwise the same final weights."""
    assert comparable(read_metrics(resumed / "metrics.jsonl")) == comparable(read_metrics(whole / "metrics.jsonl"))
    final_whole = load_file(whole / "checkpoints" / "step-000006" / "model.safetensors")
    final_resumed = load_file(resumed / "checkpoints" / "step-000006" / "model.safetensors")
    for key in final_whole:
        assert torch.equal(final_whole[key], final_resumed[key]), key


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    whole, interrupted = uninterrupted, tmp_path / "interrupted"
    process = subprocess.Popen(run_args(interrupted), cwd=ROOT, env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = interrupted / "checkpoints" / "step-000002"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run never wrote its step-2 checkpoint"
    assert not (interrupted / "checkpoints" / "step-000006").exists(), "killed too late to test anything"

    subprocess.run(run_args(interrupted, "resume=auto"), cwd=ROOT, env=env(), check=True, capture_output=True)
    assert_same_run(interrupted, whole)


def test_sigkill_while_writing_a_manifest_then_resume_matches_uninterrupted(tmp_path, uninterrupted, monkeypatch):
    from grpo.cli import main
    from grpo.run.checkpoint import MANIFEST_FILE, latest_checkpoint, verify_checkpoint

    interrupted = tmp_path / "interrupted"
    killed = subprocess.run([sys.executable, "tests/kill_during_manifest.py", "4", *run_args(interrupted)[3:]],
                            cwd=ROOT, env=env(), capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    torn = interrupted / "checkpoints" / ".tmp-step-000004" / MANIFEST_FILE
    assert torn.exists() and not torn.read_text().rstrip().endswith("}"), "the manifest was not torn"
    assert latest_checkpoint(interrupted).name == "step-000002" and verify_checkpoint(latest_checkpoint(interrupted))

    monkeypatch.chdir(ROOT)  # the resume runs in this process: the same command line, without a second start-up
    assert main(run_args(interrupted, "resume=auto")[3:]) == 0
    assert_same_run(interrupted, uninterrupted)


def test_torn_checkpoint_is_never_visible(tmp_path):
    # A temporary folder left by a crash mid-write is not a checkpoint.
    from grpo.run.checkpoint import latest_checkpoint

    (tmp_path / "checkpoints" / ".tmp-step-000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-000002").mkdir()
    (tmp_path / "checkpoints" / "step-000002" / "trainer_state.pt").write_bytes(b"x")
    assert latest_checkpoint(tmp_path).name == "step-000002"
