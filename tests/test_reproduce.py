"""The reproduction's seeds stage: which runs it trains, with which settings, from hand-made measurements."""

import json
from dataclasses import replace

from conftest import BASE, SWEEP
from eval.reproduce import PLANS, Stages, checkpoint_folder


def stages_with_sweep_measured(tmp_path):
    plan = replace(PLANS["full"], seeds=(1,))
    stages = Stages(tmp_path / "out", tmp_path / "results", plan)
    folder = stages.measurements / "mt"
    folder.mkdir(parents=True)
    for data in [BASE, *SWEEP]:
        (folder / f"{data['label']}.json").write_text(json.dumps(data))
    calls = []
    stages.train = lambda run, unless_measured=True: calls.append(("train", run.name, run.command))
    stages.tau = lambda task, seed=0: calls.append(("tau", task, seed))
    stages.measure = lambda task, targets, mmlu=False: calls.append(("measure", [name for name, _ in targets], mmlu))
    return stages, calls


def setting(command, key):
    return next(item.split("=", 1)[1] for item in command if item.startswith(key + "="))


def test_seeds_retrain_seed_zero_when_the_sweep_checkpoints_are_gone(tmp_path):
    stages, calls = stages_with_sweep_measured(tmp_path)
    stages.seeds("mt")
    trained = [(call[1], setting(call[2], "lr"), setting(call[2], "max_steps"), setting(call[2], "seed"))
               for call in calls if call[0] == "train" and "cold-start" not in call[1]]
    # The matched pair of test_report: sft-mt-lr0.0002 at step 20, grpo-mt-lr0.0001 at step 20.
    assert trained == [("sft-mt-lr0.0002", "0.0002", "20", "0"), ("grpo-mt-lr0.0001", "0.0001", "20", "0"),
                       ("sft-mt-lr0.0002-s1", "0.0002", "20", "1"), ("grpo-mt-lr0.0001-s1", "0.0001", "20", "1")]
    assert [call[1] for call in calls if call[0] == "train" and "cold-start" in call[1]] == \
        ["cold-start-mt", "cold-start-mt-s1"]
    assert calls[-1] == ("measure", ["headline/base", "headline/sft-s0", "headline/grpo-s0", "headline/sft-s1",
                                     "headline/grpo-s1"], False)
    pair = json.loads((stages.measurements / "mt" / "headline" / "pair.json").read_text())
    assert pair == {"sft": ["sft-mt-lr0.0002", 20], "grpo": ["grpo-mt-lr0.0001", 20]}


def test_seeds_reuse_the_sweep_checkpoints_on_disk(tmp_path):
    stages, calls = stages_with_sweep_measured(tmp_path)
    for name in ("sft-mt-lr0.0002", "grpo-mt-lr0.0001"):
        checkpoint_folder(stages.out, name, 20).mkdir(parents=True)
    stages.seeds("mt")
    assert [call[1] for call in calls if call[0] == "train"] == \
        ["sft-mt-lr0.0002-s1", "cold-start-mt-s1", "grpo-mt-lr0.0001-s1"]
