from pathlib import Path

import pytest

from grpo.config import GRPOConfig, load_config, parse_value, save_config
from grpo.errors import ConfigError


def test_defaults_preset_and_overrides_layer(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('group_size = 4\nlr = 3e-6\nmodel = "gemma3-270m"\n')
    cfg = load_config(GRPOConfig, preset, ["lr=1e-5", "reward_weights={semantic=1.0,bleu=0.5}",
                                            "lora_target_modules=[\"q_proj\"]", "model=smollm2-135m"])
    assert (cfg.group_size, cfg.lr, cfg.model) == (4, 1e-5, "smollm2-135m")
    assert cfg.reward_weights == {"semantic": 1.0, "bleu": 0.5}
    assert cfg.lora_target_modules == ["q_proj"]
    assert cfg.beta == 0.04  # untouched default


def test_int_is_accepted_for_a_float():
    assert load_config(GRPOConfig, overrides=["lr=1"]).lr == 1.0


def test_parse_value_falls_back_to_string():
    assert parse_value("runs/x") == "runs/x"
    assert parse_value("true") is True
    assert parse_value("0.5") == 0.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("group_sise=8", r"unknown config key 'group_sise'.*Did you mean group_size"),
        ("group_size=1", r"'group_size' must be >= 2"),
        ("group_size=two", r"'group_size' takes a int"),
        ("top_p=0", r"'top_p' must be in \(0, 1\]"),
        ("top_p=1.5", r"'top_p' must be in \(0, 1\]"),
        ("eps_low=-0.1", r"'eps_low' must be >= 0"),
        ("beta=-1", r"'beta' must be >= 0"),
        ("kl_estimator=k4", r"'kl_estimator' must be one of k1, k2, k3"),
        ("loss_aggregation=mean", r"must be one of sequence, token, dr_grpo"),
        ("reward_weights={semantik=1.0}", r"'reward_weights' must use only the terms semantic, language"),
        ("reward_weights={semantic=0}", r"at least one term a non-zero weight"),
        ("tau=1.0", r"'tau' must be in \[0, 1\)"),
        ("minibatches=3", r"'minibatches' must divide prompts_per_step = 2"),
        ("micro_batch_size=4", r"'micro_batch_size' must be a multiple of group_size = 8"),
        ("micro_batch_size=3", r"'micro_batch_size' must divide the minibatch size 16"),
        ("lr", r"not of the form key=value"),
        ("generation=fast", r"'generation' must be one of eager, static, compiled"),
        ("gradient_checkpointing=1", r"'gradient_checkpointing' takes a bool"),
    ],
)
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(GRPOConfig, overrides=[override])


@pytest.mark.parametrize("override, message", [
    ({"generation": "static"}, r"'generation' must be eager with fsdp = true \(the static samplers decode with "
                               r"one process's whole weights\); got 'static'"),
    ({"gradient_checkpointing": True}, r"'gradient_checkpointing' must be false with fsdp = true"),
])
def test_fsdp_refuses_static_generation_and_gradient_checkpointing(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(GRPOConfig, overrides={"fsdp": True, **override})


def test_preset_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(GRPOConfig, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("group_size = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(GRPOConfig, bad)


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(GRPOConfig, overrides=["reward_weights={semantic=1.5,language=1.0}", "tau=0.25", "lora_r=8"])
    save_config(cfg, tmp_path / "config.toml")
    assert load_config(GRPOConfig, tmp_path / "config.toml") == cfg


def test_shipped_grpo_presets_load():
    configs = Path(__file__).resolve().parents[1] / "configs"
    for preset in ("mt.toml", "smoke.toml", "mt_qwen3_4b.toml"):
        load_config(GRPOConfig, configs / preset)
