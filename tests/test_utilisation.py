"""Each phase's floor on this machine (grpo/run/utilisation.py), against hand counts."""

import pytest

from grpo.run.training_run import PhaseTimer
from grpo.run.utilisation import Machine, ModelCost, Roofline

COST = ModelCost(matmul_weights=1000, weight_bytes=4000, kv_bytes_per_position=10, attention_flops_per_position=100)


def test_the_model_counts_are_those_of_its_config(tiny):
    model, _ = tiny
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    per_layer = c.hidden_size * (q + 2 * kv) + q * c.hidden_size + 3 * c.hidden_size * c.intermediate_size
    weights = c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size  # the head, tied or not
    cost = ModelCost.of(model)
    assert cost.matmul_weights == weights
    assert cost.weight_bytes == 4 * weights  # float32 as stored
    assert cost.kv_bytes_per_position == 2 * c.num_hidden_layers * kv * 4
    assert cost.attention_flops_per_position == 4 * c.num_hidden_layers * q
    bf16 = ModelCost.of(model, weight_bytes_each=2, cache_bytes_each=2)
    assert (bf16.weight_bytes, bf16.kv_bytes_per_position) == (2 * weights, cost.kv_bytes_per_position // 2)


def test_a_token_step_is_floored_by_bytes_or_by_flops_whichever_takes_longer():
    # 2 rows over 50 positions: 4000 + 2 * 50 * 10 = 5000 bytes; 2 * (2 * 1000 + 50 * 100) = 14000 flops
    memory_bound = Machine(bandwidth=1e9, matmul_peak=1e10)
    assert COST.decode_step_floor(memory_bound, rows=2, context=50) == pytest.approx(5000 / 1e9)
    compute_bound = Machine(bandwidth=1e12, matmul_peak=1e9)
    assert COST.decode_step_floor(compute_bound, rows=2, context=50) == pytest.approx(14000 / 1e9)


def test_a_rollout_is_its_prefill_then_one_token_step_per_completion_token_after_the_first():
    machine = Machine(bandwidth=1e9, matmul_peak=1e10)
    prefill = 2 * 1000 * 30 / 1e10                     # 30 real prompt tokens
    steps = sum(COST.decode_step_floor(machine, 2, 20 + t) for t in range(3))
    assert Roofline(machine, COST).rollout_floor(30, 20, rows=2, completion_length=4) == pytest.approx(prefill + steps)
    assert COST.pass_floor(machine, 10) == pytest.approx(2 * 1000 * 10 / 1e10)
    assert COST.pass_floor(machine, 10, backward=True) == pytest.approx(6 * 1000 * 10 / 1e10)
    assert COST.pass_floor(machine, 10, backward=True, lora=True) == pytest.approx(4 * 1000 * 10 / 1e10)


def test_utilisation_is_the_floor_over_the_measured_seconds():
    timer = PhaseTimer()
    timer.elapsed = {"generate": 2.0, "update": 0.5, "reward": 1.0}
    timer.note_floor("generate", 0.25)
    timer.note_floor("generate", 0.25)
    timer.note_floor("update", 0.2)
    assert timer.utilisation() == {"utilisation/generate": 0.25, "utilisation/update": 0.4}
    line = Roofline(Machine(bandwidth=39e9, matmul_peak=110e9), COST).line(7, timer.utilisation())
    assert line == ("step 7 utilisation: generate 0.25 of its roofline, update 0.40 of the matmul peak "
                    "(measured: 110 GFLOP/s, 39 GB/s)")


def test_the_machine_measures_a_positive_bandwidth_and_peak_once():
    import torch

    machine = Machine.measure("cpu", torch.float32)
    assert machine.bandwidth > 1e8 and machine.matmul_peak > 1e8
    assert Machine.measure("cpu", torch.float32) is machine
