"""Two processes under gloo produce the gradient of one process on the same global batch."""

import subprocess
import sys

import pytest
import torch

from test_resume import ROOT, env


@pytest.mark.parametrize("aggregation", ["token", "sequence", "dr_grpo"])
def test_two_gloo_processes_match_one_process(tmp_path, aggregation):
    single, double = tmp_path / "one.pt", tmp_path / "two.pt"
    worker = str(ROOT / "tests" / "dist_worker.py")
    subprocess.run([sys.executable, worker, str(single), aggregation], cwd=ROOT, env=env(), check=True,
                   capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    worker, str(double), aggregation], cwd=ROOT, env=env(), check=True, capture_output=True,
                   timeout=300)
    one, two = torch.load(single), torch.load(double)
    assert one.keys() == two.keys()
    from grpo.models import load_model

    start = load_model("tiny-random-llama")[0].state_dict()
    assert any(not torch.equal(start[key], one[key]) for key in one), "the update changed nothing"
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6), key
