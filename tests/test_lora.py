"""Tests for grpo.run.lora on a tiny random Llama: the math, the switches, and PEFT interop."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from grpo.run.errors import ModelError
from grpo.run.lora import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    DEFAULT_TARGET_MODULES,
    LoraLinear,
    LoraSettings,
    apply_lora,
    has_lora,
    load_adapter,
    lora_disabled,
    lora_layers,
    lora_state_dict,
    merge_and_unload,
    save_adapter,
)
from grpo.run.training_run import trainable_parameters


def merge_lora(model) -> None:
    for _, layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model) -> None:
    for _, layer in lora_layers(model):
        layer.unmerge()


NUM_LAYERS = 2
LINEAR_NAMES_PER_LAYER = 7  # q, k, v, o, gate, up, down


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()


def input_ids() -> torch.Tensor:
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(model: nn.Module) -> torch.Tensor:
    return model(input_ids=input_ids()).logits


def randomise_lora_b(model: nn.Module, seed: int = 2) -> None:
    """B starts at zero; give it values so the adapters change the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.weight.copy_(0.1 * torch.randn(layer.lora_B.weight.shape, generator=generator))


def assert_differs(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a - b).abs().max() > 1e-3


# --- the layer itself ---------------------------------------------------------


def test_lora_linear_matches_formula_worked_by_hand():
    base = nn.Linear(3, 2)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]))
        base.bias.copy_(torch.tensor([0.5, -0.5]))
    layer = LoraLinear(base, r=2, alpha=4)  # scaling = 2
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
        layer.lora_B.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    # W x + b = [14, 1] + [0.5, -0.5]; A x = [4, 2]; B A x = [4, 4]; times 2 = [8, 8].
    output = layer(torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(output, torch.tensor([[22.5, 8.5]]), rtol=0, atol=0)


def test_lora_linear_matches_matrix_formula_on_batched_input():
    generator = torch.Generator().manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoraLinear(base, r=3, alpha=12)
    W, b = base.weight.detach(), base.bias.detach()
    A = torch.randn(3, 6, generator=generator)
    B = torch.randn(5, 3, generator=generator)
    with torch.no_grad():
        layer.lora_A.weight.copy_(A)
        layer.lora_B.weight.copy_(B)
    x = torch.randn(2, 4, 6, generator=generator)
    expected = x @ W.T + b + (12 / 3) * x @ A.T @ B.T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_linear_initialisation_follows_peft():
    layer = LoraLinear(nn.Linear(64, 32), r=8, alpha=16)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    # Kaiming-uniform with a = sqrt(5) draws from U(-1/sqrt(in), 1/sqrt(in)).
    bound = 1 / math.sqrt(64)
    assert layer.lora_A.weight.abs().max() <= bound
    assert layer.lora_A.weight.abs().max() > 0.8 * bound
    assert layer.scaling == 2.0


# --- apply_lora on a whole model ------------------------------------------------


def test_zero_initialised_adapter_leaves_logits_unchanged():
    model = tiny_llama()
    before = logits(model)
    replaced = apply_lora(model, r=4, alpha=8)
    assert len(replaced) == NUM_LAYERS * LINEAR_NAMES_PER_LAYER
    assert "lm_head" not in replaced
    assert "model.layers.0.self_attn.q_proj" in replaced
    assert isinstance(model.model.layers[1].mlp.down_proj, LoraLinear)
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, LoraLinear)
    assert model.lora_settings == LoraSettings(4, 8, 0.0, DEFAULT_TARGET_MODULES)
    assert torch.equal(logits(model), before)


def test_lora_disabled_gives_base_outputs_and_restores_adapters():
    model = tiny_llama()
    base_logits = logits(model)
    apply_lora(model, r=4, alpha=8)
    randomise_lora_b(model)
    adapted_logits = logits(model)
    assert_differs(adapted_logits, base_logits)
    with lora_disabled(model):
        torch.testing.assert_close(logits(model), base_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model), adapted_logits, rtol=0, atol=0)


def test_lora_disabled_restores_previous_flags_even_on_exception():
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8)
    layers = [layer for _, layer in lora_layers(model)]
    layers[0].disabled = True  # already off before the block: must stay off after it
    with pytest.raises(ValueError):
        with lora_disabled(model):
            assert all(layer.disabled for layer in layers)
            raise ValueError("inside the block")
    assert layers[0].disabled
    assert not any(layer.disabled for layer in layers[1:])


def test_merged_forward_equals_unmerged_and_unmerge_restores_weights():
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8)
    randomise_lora_b(model)
    original_weights = {name: layer.base_layer.weight.detach().clone() for name, layer in lora_layers(model)}
    adapted_logits = logits(model)

    merge_lora(model)
    q_proj = model.model.layers[0].self_attn.q_proj
    expected_q_weight = original_weights["model.layers.0.self_attn.q_proj"] + (
        (8 / 4) * q_proj.lora_B.weight @ q_proj.lora_A.weight
    )
    torch.testing.assert_close(q_proj.base_layer.weight.detach(), expected_q_weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model), adapted_logits, rtol=0, atol=1e-5)
    merge_lora(model)  # a second merge must not add B A twice
    torch.testing.assert_close(logits(model), adapted_logits, rtol=0, atol=1e-5)
    with pytest.raises(RuntimeError, match="unmerge"):
        with lora_disabled(model):
            logits(model)

    unmerge_lora(model)
    for name, layer in lora_layers(model):
        torch.testing.assert_close(layer.base_layer.weight.detach(), original_weights[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model), adapted_logits, rtol=0, atol=1e-5)


def test_merge_keeps_a_float64_weight_in_float64():
    """W + (alpha / r) B A computed in float64, exactly as written, for a float64 layer (not rounded through float32)."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"q_proj": nn.Linear(32, 16, dtype=torch.float64)})
    apply_lora(model, r=4, alpha=8, target_modules=["q_proj"])
    layer = model["q_proj"]
    nn.init.normal_(layer.lora_B.weight)
    weight = layer.base_layer.weight.detach().clone()
    expected = weight + 2.0 * (layer.lora_B.weight.detach() @ layer.lora_A.weight.detach())
    assert expected.dtype == torch.float64

    merge_lora(model)
    assert layer.base_layer.weight.dtype == torch.float64
    torch.testing.assert_close(layer.base_layer.weight.detach(), expected, rtol=0, atol=1e-14)
    unmerge_lora(model)
    torch.testing.assert_close(layer.base_layer.weight.detach(), weight, rtol=0, atol=1e-14)

    merge_and_unload(model)
    torch.testing.assert_close(model["q_proj"].weight.detach(), expected, rtol=0, atol=1e-14)


def test_only_lora_parameters_are_trainable_and_receive_gradients():
    model = tiny_llama()
    replaced = apply_lora(model, r=4, alpha=8)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    expected = {f"{name}.lora_{part}.weight" for name in replaced for part in ("A", "B")}
    assert trainable == expected
    named = dict(model.named_parameters())
    assert {id(parameter) for parameter in trainable_parameters(model)} == {id(named[name]) for name in expected}

    model(input_ids=input_ids()).logits.square().mean().backward()
    for name, parameter in model.named_parameters():
        if name in expected:
            assert parameter.grad is not None
        else:
            assert parameter.grad is None, name
    # With B = 0 the loss does not depend on A yet, but it does on every B.
    for _, layer in lora_layers(model):
        assert layer.lora_B.weight.grad.abs().max() > 0


def test_apply_lora_keeps_dtype_of_wrapped_layers():
    model = tiny_llama().to(torch.bfloat16)
    apply_lora(model, r=4, alpha=8, target_modules=("q_proj", "down_proj"))
    assert has_lora(model)
    for _, layer in lora_layers(model):
        assert layer.lora_A.weight.dtype == torch.bfloat16
        assert layer.lora_B.weight.dtype == torch.bfloat16
        assert layer.lora_A.weight.device == layer.base_layer.weight.device
    assert not isinstance(model.model.layers[0].self_attn.k_proj, LoraLinear)


def test_no_matching_target_modules_raises_and_names_available_layers():
    model = tiny_llama()
    with pytest.raises(ModelError) as raised:
        apply_lora(model, target_modules=("query", "value"))
    message = str(raised.value)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"):
        assert name in message
    assert not has_lora(model)
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_apply_lora_twice_raises():
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8)
    with pytest.raises(ModelError, match="already has LoRA"):
        apply_lora(model, r=4, alpha=8)


def test_regex_target_modules_match_whole_names_like_peft():
    model = tiny_llama()
    replaced = apply_lora(model, r=2, alpha=2, target_modules=r"model\.layers\.1\.self_attn\.(q|v)_proj")
    assert replaced == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]


# --- saving and loading ----------------------------------------------------------


def test_save_then_load_adapter_reproduces_logits(tmp_path):
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8, dropout=0.05)
    randomise_lora_b(model)
    adapted_logits = logits(model)
    save_adapter(model, tmp_path, "tiny-llama")

    config = json.loads((tmp_path / ADAPTER_CONFIG_FILE).read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["lora_dropout"] == 0.05
    assert config["base_model_name_or_path"] == "tiny-llama"
    saved = load_file(str(tmp_path / ADAPTER_WEIGHTS_FILE))
    assert set(saved) == set(lora_state_dict(model))

    fresh = tiny_llama()
    settings = load_adapter(fresh, tmp_path)
    assert settings == model.lora_settings
    assert fresh.lora_settings == settings
    torch.testing.assert_close(logits(fresh), adapted_logits, rtol=0, atol=0)
    assert {name for name, p in fresh.named_parameters() if p.requires_grad} == {
        name for name, p in model.named_parameters() if p.requires_grad
    }


def test_load_adapter_rejects_missing_keys_and_leaves_model_unchanged(tmp_path):
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8)
    save_adapter(model, tmp_path, "tiny-llama")
    weights = load_file(str(tmp_path / ADAPTER_WEIGHTS_FILE))
    del weights["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"]
    save_file(weights, str(tmp_path / ADAPTER_WEIGHTS_FILE))

    fresh = tiny_llama()
    with pytest.raises(ModelError, match=r"1 missing .*layers\.1\.mlp\.up_proj\.lora_B\.weight"):
        load_adapter(fresh, tmp_path)
    assert not has_lora(fresh)


def test_load_adapter_rejects_wrong_shapes(tmp_path):
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8)
    save_adapter(model, tmp_path, "tiny-llama")
    config = json.loads((tmp_path / ADAPTER_CONFIG_FILE).read_text())
    config["r"] = 2  # the file still holds rank-4 weights
    (tmp_path / ADAPTER_CONFIG_FILE).write_text(json.dumps(config))

    fresh = tiny_llama()
    with pytest.raises(ModelError, match=r"wrong shape .*saved \(4, 64\), expected \(2, 64\)"):
        load_adapter(fresh, tmp_path)
    assert not has_lora(fresh)


def test_load_adapter_rejects_peft_options_it_does_not_implement(tmp_path):
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8)
    save_adapter(model, tmp_path, "tiny-llama")
    config = json.loads((tmp_path / ADAPTER_CONFIG_FILE).read_text())
    config["use_dora"] = True
    config["bias"] = "lora_only"
    (tmp_path / ADAPTER_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"bias='lora_only', use_dora=True"):
        load_adapter(tiny_llama(), tmp_path)


def test_load_adapter_without_config_raises(tmp_path):
    with pytest.raises(ModelError, match="no adapter_config.json"):
        load_adapter(tiny_llama(), tmp_path)


def test_save_adapter_without_lora_raises(tmp_path):
    with pytest.raises(ModelError, match="no LoRA adapters"):
        save_adapter(tiny_llama(), tmp_path, "tiny-llama")


# --- interop with PEFT itself ---------------------------------------------------


def test_state_dict_keys_and_shapes_match_peft():
    peft = pytest.importorskip("peft")
    ours = tiny_llama()
    apply_lora(ours, r=4, alpha=8)
    theirs = peft.get_peft_model(
        tiny_llama(),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(DEFAULT_TARGET_MODULES), task_type="CAUSAL_LM"),
    )
    their_state = peft.get_peft_model_state_dict(theirs)
    our_state = lora_state_dict(ours)
    assert set(our_state) == set(their_state)
    for key, tensor in our_state.items():
        assert tensor.shape == their_state[key].shape, key


def test_our_adapter_loads_in_peft_with_same_logits(tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny_llama()
    apply_lora(model, r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))
    randomise_lora_b(model)
    our_logits = logits(model)
    save_adapter(model, tmp_path, "tiny-llama")

    config = peft.LoraConfig.from_pretrained(str(tmp_path))
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 8, {"q_proj", "v_proj", "down_proj"})
    peft_model = peft.PeftModel.from_pretrained(tiny_llama(), str(tmp_path)).eval()
    torch.testing.assert_close(logits(peft_model), our_logits, rtol=0, atol=1e-5)
    assert_differs(our_logits, logits(tiny_llama()))


def test_adapter_saved_by_peft_loads_with_same_logits(tmp_path):
    peft = pytest.importorskip("peft")
    peft_model = peft.get_peft_model(
        tiny_llama(),
        peft.LoraConfig(
            r=4, lora_alpha=16, lora_dropout=0.0, target_modules=list(DEFAULT_TARGET_MODULES), task_type="CAUSAL_LM"
        ),
    ).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    peft_logits = logits(peft_model)
    peft_model.save_pretrained(str(tmp_path))

    model = tiny_llama()
    settings = load_adapter(model, tmp_path)
    assert (settings.r, settings.alpha, set(settings.target_modules)) == (4, 16, set(DEFAULT_TARGET_MODULES))
    torch.testing.assert_close(logits(model), peft_logits, rtol=0, atol=1e-5)
    assert_differs(peft_logits, logits(tiny_llama()))


def test_bfloat16_base_from_load_model_trains_float32_adapters():
    # The frozen base in bf16 halves its memory; A, B, their gradients and AdamW state stay float32.
    from grpo.run.models import load_model

    model, _ = load_model("tiny-random-llama", dtype="bfloat16",
                          lora={"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "down_proj"]})
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert layer.lora_A.weight.dtype == layer.lora_B.weight.dtype == torch.float32
    with torch.no_grad():
        layer.lora_B.weight.normal_(generator=torch.Generator().manual_seed(0))
        x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
        # W x in bf16, plus the update computed in float32 and rounded once
        update = 2.0 * (x.float() @ layer.lora_A.weight.T @ layer.lora_B.weight.T)
        expected = nn.functional.linear(x, layer.base_layer.weight) + update.to(torch.bfloat16)
        assert torch.equal(layer(x), expected)

    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
    loss = model(input_ids=torch.randint(3, 1000, (2, 6))).logits.float().square().mean()  # no autocast needed
    loss.backward()
    optimizer.step()
    adapters = list(trainable_parameters(model))
    assert adapters and all(p.grad.dtype == torch.float32 for p in adapters)
    assert all(optimizer.state[p]["exp_avg"].dtype == torch.float32 for p in adapters)
