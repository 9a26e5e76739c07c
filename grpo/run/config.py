"""The trainers' config system: dataclasses, TOML presets, `key=value` overrides.

GRPO and SFT are configured here; the evaluation and data commands and
`grpo.tau` parse their own options with argparse.

A trainer's config is a flat dataclass whose fields carry their defaults and
whose `help` metadata documents them. A run's config is resolved in three
layers, later ones winning:

    dataclass defaults  <  preset file (configs/*.toml)  <  command-line key=value

Values on the command line are parsed as TOML values, so `lr=3e-6`,
`lora_target_modules=["q_proj","v_proj"]` and
`reward_weights={semantic=1.0,bleu=1.0}` all work; a bare word that is not
valid TOML is taken as a string (`model=smollm2-135m`).

An unknown key or an invalid value raises `ConfigError` naming the key and
what it accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

from grpo.run.data import TASKS
from grpo.run.errors import ConfigError
from grpo.run.lora import DEFAULT_TARGET_MODULES, LoraSettings

# Renamed keys and values: the old spelling still loads, with a note, until 2027-03-01, so that
# presets, command lines and the config.toml and checkpoints of existing runs keep working.
RENAMED_KEYS = {"adv_eps": "std_offset"}
RENAMED_VALUES = {"loss_aggregation": {"sequence": "seq-mean-token-mean", "token": "token-mean",
                                       "dr_grpo": "seq-mean-token-sum-norm"}}


def current_name(key: str, value: Any, where: str | None = None) -> tuple[str, Any]:
    """(key, value) spelled the current way; says so on stderr when `where` names an old spelling's source."""
    new_key = RENAMED_KEYS.get(key, key)
    new_value = RENAMED_VALUES.get(new_key, {}).get(value, value) if isinstance(value, str) else value
    if where is not None and (new_key, new_value) != (key, value):
        print(f"note: {key} = {value!r} in {where} is now {new_key} = {new_value!r}; "
              "the old spelling will stop loading on 2027-03-01", file=sys.stderr)
    return new_key, new_value


def option(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field with a default, a one-line description and optional choices."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(default)), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_value(text: str) -> Any:
    """Parse one command-line value as TOML, falling back to the raw string.

    A list of bare words, `[tensorboard]` or `[q_proj, v_proj]`, is a list of
    strings: `make ARGS='report_to=["tensorboard"]'` reaches us through a
    shell that has removed the quotes.
    """
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if text.startswith("[") and text.endswith("]") and "[" not in text[1:-1] and "]" not in text[1:-1]:
            return [parse_value(item.strip()) for item in text[1:-1].split(",") if item.strip()]
        return text


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to the field's type, or raise ConfigError."""
    origin = typing.get_origin(annotation) or annotation
    expected = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}.get(
        getattr(origin, "__name__", str(origin)), origin
    )
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"config key '{key}' takes an integer, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"config key '{key}' takes a {expected.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _finite(value: Any) -> bool:
    """False when `value` is, or holds in a list or table, an inf or a NaN."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """Command-line `key=value` items as (key, parsed value) pairs; ConfigError for an item without '='."""
    pairs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, text = item.split("=", 1)
        pairs.append((key.strip(), parse_value(text.strip())))
    return pairs


def describe(cls) -> str:
    """One line per field: name, default and help text (for --help and docs)."""
    lines = []
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        choices = field.metadata.get("choices")
        extra = f" (one of {', '.join(map(str, choices))})" if choices else ""
        lines.append(f"  {field.name} = {json.dumps(default, ensure_ascii=False)}\n      {field.metadata['help']}{extra}")
    return "\n".join(lines)


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """The tables of a TOML file; ConfigError if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not part of the text.
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} '{path}' is not valid TOML: {err}") from None


def load_config(cls, preset: str | Path | None = None, overrides: list[str] | dict | None = None):
    """Build a `cls` config from defaults, an optional TOML preset and overrides.

    Args:
        cls: the config dataclass (it may define `validate(self)`).
        preset: path to a TOML file with top-level keys that are field names.
        overrides: ["key=value", ...] from the command line, or a dict.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    type_hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}

    def set_value(key: str, value: Any, where: str) -> None:
        key, value = current_name(key, value, where)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key '{key}' in {where}.{hint} Valid keys: {', '.join(fields)}")
        value = _check_type(key, value, type_hints[key])
        if not _finite(value):
            raise ConfigError(f"config key '{key}' must be finite; got {value!r}")
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, choices))}; got {value!r}")
        values[key] = value

    if preset:
        for key, value in read_toml(preset).items():
            set_value(key, value, str(preset))

    if isinstance(overrides, dict):
        for key, value in overrides.items():
            set_value(key, value, "the overrides")
    for key, value in parse_overrides(overrides) if isinstance(overrides, list) else []:
        set_value(key, value, "the command line")

    config = cls(**values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def check(condition: bool, key: str, requirement: str, value: Any) -> None:
    """Raise ConfigError '<key> must <requirement>; got <value>' unless condition holds."""
    if not condition:
        raise ConfigError(f"config key '{key}' must {requirement}; got {value!r}")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _toml_value(value: Any) -> str:
    # JSON strings, numbers, booleans and arrays are valid TOML; only tables differ.
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def save_config(config, path: str | Path) -> None:
    """Write the resolved config as a TOML preset that `load_config` reads back unchanged."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in to_dict(config).items()]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# The fields every trainer shares: run folder, model, LoRA, data.
# --------------------------------------------------------------------------
REPORTERS = ("tensorboard",)
FLOAT32_MAX = 3.4028234663852886e38

@dataclasses.dataclass
class RunConfig:
    out_dir: str = option("runs/grpo-mt", "run folder: resolved config, metrics.jsonl, eval/, checkpoints/")
    overwrite: bool = option(False, "replace an existing run in out_dir instead of refusing")
    resume: str = option("", "'auto' (latest checkpoint of out_dir) or a checkpoint folder to continue from")
    seed: int = option(0, "seed for sampling, data order and LoRA init")
    threads: int = option(0, "torch CPU threads (0 = torch's default)")

    model: str = option("smollm2-135m", "builtin name (smollm2-135m, gemma3-270m), model/adapter folder, or hub id")
    dtype: str = option("float32", "weights dtype", ("float32", "bfloat16", "float16"))
    mixed_precision: str = option("no", "bf16: forward passes under bfloat16 autocast, fp32 weights and optimizer",
                                  ("no", "bf16"))
    device: str = option("cpu", "torch device: cpu, cuda, cuda:1, ...")
    lora_r: int = option(0, "LoRA rank; 0 trains all weights")
    lora_alpha: float = option(16.0, "LoRA alpha (scaling = alpha / r)")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch input")
    lora_target_modules: list = option(
        list(DEFAULT_TARGET_MODULES),
        "names (last component) of the Linear layers that get adapters",
    )

    task: str = option("mt", "mt: translation; hg: headline generation", TASKS)
    data: str = option("data/mt", "folder with train.jsonl and dev.jsonl (test.jsonl optional), or one JSONL file")
    source_lang: str = option("bo", "language of the model's input (bo, zh, en, ...)")
    target_lang: str = option("zh", "language the model must write")
    data_langs: str = option("bo-zh", "languages of the files' source and target fields (mt only)")
    prompt_format: str = option("auto", "auto: chat template when the tokenizer has one", ("auto", "chat", "plain"))
    limit: int = option(0, "use only N training examples, a fixed random subset drawn with `seed` (0 = all)")
    dev_limit: int = option(32, "dev records evaluated (0 = all)")
    eval_max_new_tokens: int = option(48, "completion cap of the greedy dev outputs, whose reward-hacking statistics "
                                          "every dev evaluation logs (SFT: 0 = the dev loss only)")
    max_prompt_tokens: int = option(0, "leave out examples whose prompt is longer (0 = keep all); the count is printed")

    lr: float = option(1e-6, "peak learning rate (AdamW)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.99, "AdamW beta2")
    warmup_steps: int = option(0, "optimizer steps of linear warmup before the cosine decay")
    min_lr_ratio: float = option(0.0, "cosine decays to lr * min_lr_ratio")
    max_grad_norm: float = option(1.0, "gradient clipping by global norm (0 = off)")
    max_skipped_steps: int = option(5, "consecutive non-finite optimizer steps that stop the run")
    logprob_chunk_tokens: int = option(0, "positions per LM-head chunk in log-prob passes; "
                                          "0: as many as fit in 128 MB of float32 logits (128 for a 262k vocabulary)")
    max_steps: int = option(100, "training steps")
    eval_every: int = option(10, "evaluate on the dev set every N steps (0 = only at start and end)")
    save_every: int = option(0, "checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = option(2, "how many recent checkpoints to keep")
    report_to: list = option([], 'metric sinks beside metrics.jsonl: ["tensorboard"] also writes every metric '
                                 'to <out_dir>/tensorboard/ (needs the extra: pip install -e ".[tensorboard]")')

    def validate(self) -> None:
        check(self.lora_r >= 0, "lora_r", "be >= 0", self.lora_r)
        if self.lora_r:
            LoraSettings(**self.lora)  # the ranges of alpha, dropout and target modules, checked where LoRA is
        check(self.limit >= 0, "limit", "be >= 0", self.limit)
        check(self.dev_limit >= 0, "dev_limit", "be >= 0", self.dev_limit)
        check(self.eval_max_new_tokens >= 0, "eval_max_new_tokens", "be >= 0", self.eval_max_new_tokens)
        check(self.max_prompt_tokens >= 0, "max_prompt_tokens", "be >= 0", self.max_prompt_tokens)
        check(self.lr > 0, "lr", "be > 0", self.lr)
        check(self.weight_decay >= 0, "weight_decay", "be >= 0", self.weight_decay)
        check(0 <= self.adam_beta1 < 1, "adam_beta1", "be in [0, 1)", self.adam_beta1)
        check(0 <= self.adam_beta2 < 1, "adam_beta2", "be in [0, 1)", self.adam_beta2)
        # AdamW's first step moves a weight by lr / (1 - adam_beta1), which torch must hold in a float32.
        check(self.lr / (1 - self.adam_beta1) < FLOAT32_MAX, "lr",
              "be small enough for AdamW's first step, lr / (1 - adam_beta1), to fit a float32 (3.4e38)", self.lr)
        check(self.warmup_steps >= 0, "warmup_steps", "be >= 0", self.warmup_steps)
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "be in [0, 1]", self.min_lr_ratio)
        check(self.max_grad_norm >= 0, "max_grad_norm", "be >= 0", self.max_grad_norm)
        check(self.max_skipped_steps >= 1, "max_skipped_steps", "be >= 1", self.max_skipped_steps)
        check(self.logprob_chunk_tokens >= 0, "logprob_chunk_tokens", "be >= 0 (0: automatic)",
              self.logprob_chunk_tokens)
        check(self.max_steps >= 1, "max_steps", "be >= 1", self.max_steps)
        check(self.eval_every >= 0, "eval_every", "be >= 0", self.eval_every)
        check(self.save_every >= 0, "save_every", "be >= 0", self.save_every)
        check(self.keep_checkpoints >= 1, "keep_checkpoints", "be >= 1", self.keep_checkpoints)
        check(self.threads >= 0, "threads", "be >= 0", self.threads)
        check(self.resume in ("", "auto") or Path(self.resume).is_dir(), "resume",
              "be '', 'auto' or an existing checkpoint folder", self.resume)
        check(set(self.report_to) <= set(REPORTERS), "report_to", f"list only {', '.join(REPORTERS)}",
              self.report_to)
        if "tensorboard" in self.report_to:
            from grpo.run.metrics import tensorboard_writer

            tensorboard_writer()  # fails here, before any model is loaded, when the package is missing

    def check_world_size(self, world_size: int) -> None:
        """Refuse a launch whose number of processes this config cannot train with (raises ConfigError)."""

    @property
    def lora(self) -> dict | None:
        """LoRA settings for `load_model`, or None for full fine-tuning."""
        if self.lora_r == 0:
            return None
        return {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "target_modules": list(self.lora_target_modules)}
