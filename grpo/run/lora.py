"""LoRA written by hand: low-rank adapters on the linear layers of a causal LM.

A LoRA adapter keeps a pretrained weight W [out, in] frozen and learns a
low-rank update of rank r:

    h = W x + b + (alpha / r) * B A x        A [r, in], B [out, r]

B starts at zero, so the adapted model starts out as the base model exactly.
Only A and B are trained (megabytes instead of the whole model), and switching
the adapters off gives back the base model: GRPO uses that as the frozen
reference policy of its KL term, so no second copy of the weights is kept.

Adapters are saved in PEFT's format (`adapter_config.json` plus
`adapter_model.safetensors` with PEFT's key names), so an adapter trained here
loads with PEFT or vLLM and one trained with PEFT loads here. PEFT itself is not
needed at runtime.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from grpo.run.errors import ConfigError, ModelError

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"

# PEFT saves the adapter of a module named `model.layers.0.self_attn.q_proj` as
# `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`: a PeftModel
# holds a LoraModel as `base_model`, which holds the original model as `model`.
# The adapter name ("default") is left out of the saved file.
PEFT_KEY_PREFIX = "base_model.model."

# PEFT options that change the adapter's math or which weights it holds. An
# adapter that uses any of them cannot be reproduced by `LoraLinear`, so loading
# it fails loudly instead of giving silently different outputs. Each is unused
# when it is absent, None, False, "none" or empty.
UNSUPPORTED_PEFT_OPTIONS = (
    "bias",
    "use_rslora",
    "use_dora",
    "use_qalora",
    "use_bdlora",
    "lora_bias",
    "fan_in_fan_out",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
    "layers_to_transform",
    "layer_replication",
    "exclude_modules",
    "target_parameters",
    "trainable_token_indices",
    "alora_invocation_tokens",
)


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """The settings that define a set of adapters; stored on the model as `model.lora_settings`.

    `target_modules` follows PEFT: a sequence of names, each matching every
    module whose name is that name or ends with "." + that name; or one string,
    a regular expression that must match a module's whole name.
    """

    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...] | str

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.target_modules, str):
            # A frozen dataclass is hashable and comparable only if its fields are;
            # a list passed in (as read from JSON) becomes a tuple.
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
            if not self.target_modules or not all(isinstance(name, str) and name for name in self.target_modules):
                raise ConfigError(f"LoRA target_modules must be non-empty names, got {self.target_modules!r}")

    @property
    def scaling(self) -> float:
        """The factor on the low-rank update: scaling = alpha / r."""
        return self.alpha / self.r


class LoraLinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update.

        h = W x + b + (alpha / r) * B A dropout(x)

    x [*, in] -> h [*, out]; W [out, in] and b [out] belong to `base_layer`,
    A [r, in] is `lora_A.weight`, B [out, r] is `lora_B.weight`.

    Two switches change the forward pass to the base layer alone:
    - `disabled`: the adapter is skipped (the reference policy in GRPO);
    - `merged`: the update has been added into W by `merge()`, so computing it
      again would count it twice.
    """

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        # A and B live where W lives, in W's dtype unless `dtype` says otherwise:
        # float32 adapters over a bfloat16 base keep the trained weights and
        # their optimizer state in full precision.
        weight = base_layer.weight
        dtype = dtype or weight.dtype
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, device=weight.device, dtype=dtype)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, device=weight.device, dtype=dtype)
        # With p = 0 an Identity saves the work of building an all-ones mask.
        self.lora_dropout: nn.Module = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A ~ U(-1/sqrt(in), 1/sqrt(in)) as PEFT draws it; B = 0 so that B A = 0 at the start."""
        # Kaiming-uniform with a = sqrt(5) gives the bound 1/sqrt(in), the same
        # as nn.Linear's default; a random A lets B receive gradient at once.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def lora_update(self, x: torch.Tensor) -> torch.Tensor:
        """(alpha / r) * B A dropout(x), computed in the adapters' dtype: x [*, in] -> [*, out]."""
        return self.scaling * self.lora_B(self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype))))

    def delta_weight(self) -> torch.Tensor:
        """The update as a dense matrix: dW = (alpha / r) * B @ A, [out, in].

        Computed in float32, or in the weight's own dtype when that is wider (float64).
        """
        dtype = self._merge_dtype()
        return self.scaling * (self.lora_B.weight.to(dtype) @ self.lora_A.weight.to(dtype))

    def _merge_dtype(self) -> torch.dtype:
        # At least float32, so a bf16 W loses no more than one rounding; never narrower than W itself.
        return torch.promote_types(self.base_layer.weight.dtype, torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W x + b + (alpha / r) * B A dropout(x); x [*, in] -> h [*, out]."""
        if self.disabled and self.merged:
            # W already holds B A, so the base layer alone is not the base model.
            raise RuntimeError("a merged LoRA layer cannot be disabled; unmerge() it first")
        base_output = self.base_layer(x)
        if self.disabled or self.merged:
            return base_output
        return base_output + self.lora_update(x).to(base_output.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) * B @ A, so that the forward pass is one matmul. No-op if merged."""
        if self.merged:
            return
        weight = self.base_layer.weight
        # Add in float32 (or wider) and round once into W's dtype.
        weight.copy_(weight.to(self._merge_dtype()) + self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (alpha / r) * B @ A, undoing `merge()`. No-op if not merged."""
        if not self.merged:
            return
        weight = self.base_layer.weight
        weight.copy_(weight.to(self._merge_dtype()) - self.delta_weight())
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}, disabled={self.disabled}"


def is_target_module(module_name: str, target_modules: Sequence[str] | str) -> bool:
    """Whether a module is adapted, by PEFT's rule (see `LoraSettings.target_modules`)."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module_name) is not None
    return any(module_name == target or module_name.endswith("." + target) for target in target_modules)


def target_linear_names(model: nn.Module, target_modules: Sequence[str] | str) -> list[str]:
    """The names of the `nn.Linear` layers that `target_modules` selects, in model order.

    Raises ModelError when nothing matches, naming the Linear layers the model has.
    """
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    targets = [name for name in linear_names if is_target_module(name, target_modules)]
    if not targets:
        available = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
        raise ModelError(
            f"LoRA target_modules {target_modules!r} match no nn.Linear layer of the model; "
            f"its Linear layers are named: {', '.join(available) or '(none)'}"
        )
    return targets


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] | str = DEFAULT_TARGET_MODULES,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Wrap each selected `nn.Linear` in a `LoraLinear` and freeze everything else.

    After this only the lora_A / lora_B weights require grad. The settings are
    stored as `model.lora_settings` for `save_adapter`. The default targets are
    the attention and MLP projections of Llama-style models; lm_head is left
    alone. `dtype`: the adapters' dtype (default: each wrapped layer's).
    Returns the names of the wrapped modules.
    """
    settings = LoraSettings(r=r, alpha=alpha, dropout=dropout, target_modules=target_modules)
    if has_lora(model):
        raise ModelError("the model already has LoRA adapters; apply_lora/load_adapter need a model without them")
    names = target_linear_names(model, settings.target_modules)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base_layer = getattr(parent, child_name)
        setattr(parent, child_name, LoraLinear(base_layer, settings.r, settings.alpha, settings.dropout, dtype))
    model.lora_settings = settings
    return names


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    """(name, layer) for every `LoraLinear` in the model, in model order."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield name, module


def has_lora(model: nn.Module) -> bool:
    """Whether the model holds any `LoraLinear`."""
    return any(True for _ in lora_layers(model))


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model: every adapter is skipped inside the block.

    Each layer's previous `disabled` flag comes back on exit, also when the
    block raises. A model without adapters is left as it is.
    """
    layers = [layer for _, layer in lora_layers(model)]
    previous_flags = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield
    finally:
        for layer, was_disabled in zip(layers, previous_flags):
            layer.disabled = was_disabled


def merge_and_unload(model: nn.Module) -> None:
    """Fold every adapter into its base weight and put the plain Linear back.

    Afterwards the model is an ordinary model whose weights are the adapted
    ones; fresh adapters can be applied on top. This is how a second training
    stage starts from a first stage's adapter: its reference (the
    adapter-disabled network) is then the first stage's model, not the base.
    """
    for name, layer in list(lora_layers(model)):
        layer.merge()
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, layer.base_layer)
    if hasattr(model, "lora_settings"):
        del model.lora_settings
    for parameter in model.parameters():
        parameter.requires_grad_(True)


def peft_weight_keys(module_name: str) -> tuple[str, str]:
    """PEFT's saved keys for the A and B weights of the adapter on `module_name`."""
    prefix = PEFT_KEY_PREFIX + module_name
    return prefix + ".lora_A.weight", prefix + ".lora_B.weight"


def lora_state_dict(model: nn.Module, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter weights under PEFT's key names: A [r, in] and B [out, r] per layer.

    Like `state_dict()`, the tensors are detached but share storage with the
    model; or they are taken from `weights`, the model's full state dict,
    when the model's own parameters are shards (FSDP).
    """
    state: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model):
        key_a, key_b = peft_weight_keys(name)
        if weights is None:
            state[key_a], state[key_b] = layer.lora_A.weight.detach(), layer.lora_B.weight.detach()
        else:
            state[key_a], state[key_b] = weights[f"{name}.lora_A.weight"], weights[f"{name}.lora_B.weight"]
    return state


def peft_adapter_config(settings: LoraSettings, base_model_name_or_path: str) -> dict:
    """The `adapter_config.json` contents PEFT needs to rebuild these adapters."""
    target_modules = settings.target_modules
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": settings.r,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": target_modules if isinstance(target_modules, str) else list(target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        # Written out although they are PEFT's defaults, so that a reader sees
        # the plain alpha / r scaling without knowing those defaults.
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def save_adapter(model: nn.Module, folder: str | Path, base_model_name_or_path: str,
                 weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write `adapter_config.json` and `adapter_model.safetensors` into `folder`, in PEFT's format.

    `weights`: the model's full state dict, when its own parameters are shards (FSDP).
    """
    settings = getattr(model, "lora_settings", None)
    if not has_lora(model) or not isinstance(settings, LoraSettings):
        raise ModelError("the model has no LoRA adapters made by apply_lora or load_adapter; nothing to save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = peft_adapter_config(settings, base_model_name_or_path)
    (folder / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # safetensors wants contiguous tensors that own their storage.
    adapters = {key: tensor.contiguous().clone() for key, tensor in lora_state_dict(model, weights).items()}
    save_file(adapters, str(folder / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})


def read_adapter_settings(folder: str | Path) -> LoraSettings:
    """Read `adapter_config.json` (ours or PEFT's) into LoraSettings.

    Raises ModelError when the file is missing or unreadable, is not a LoRA
    config, or uses a PEFT option that `LoraLinear` does not implement.
    """
    config_path = Path(folder) / ADAPTER_CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no {ADAPTER_CONFIG_FILE} in {folder}; is this a LoRA adapter folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read {config_path}: {error}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} must hold a JSON object")
    if config.get("peft_type") != "LORA":
        raise ModelError(f"{config_path} has peft_type {config.get('peft_type')!r}; only 'LORA' adapters load here")
    missing = [field for field in ("r", "lora_alpha", "target_modules") if config.get(field) is None]
    if missing:
        raise ModelError(f"{config_path} lacks {', '.join(missing)}")
    used_options = [option for option in UNSUPPORTED_PEFT_OPTIONS if not _is_unused(config.get(option))]
    if used_options:
        raise ModelError(
            f"{config_path} uses PEFT options this LoRA does not implement: "
            + ", ".join(f"{option}={config[option]!r}" for option in used_options)
        )
    try:
        return LoraSettings(
            r=config["r"],
            alpha=config["lora_alpha"],
            dropout=config.get("lora_dropout") or 0.0,
            target_modules=config["target_modules"],
        )
    except ConfigError as error:
        raise ModelError(f"{config_path}: {error}") from None


def _is_unused(option_value: object) -> bool:
    """Whether a PEFT option holds its "off" value."""
    return option_value is None or option_value is False or option_value in ("none", [], {})


def load_adapter(model: nn.Module, folder: str | Path) -> LoraSettings:
    """Add the adapters saved in `folder` (by `save_adapter` or by PEFT) to a model without adapters.

    Everything is checked before the model is touched: the config must be
    supported, and the weight file must hold exactly the A [r, in] and
    B [out, r] of each targeted layer. Otherwise ModelError, and the model is
    left unchanged. Returns the settings read from the config.
    """
    folder = Path(folder)
    settings = read_adapter_settings(folder)
    if has_lora(model):
        raise ModelError("the model already has LoRA adapters; load_adapter needs a model without them")
    names = target_linear_names(model, settings.target_modules)
    expected_shapes: dict[str, tuple[int, int]] = {}
    for name in names:
        linear = model.get_submodule(name)
        key_a, key_b = peft_weight_keys(name)
        expected_shapes[key_a] = (settings.r, linear.in_features)
        expected_shapes[key_b] = (linear.out_features, settings.r)
    saved_weights = _read_adapter_weights(folder, expected_shapes)

    apply_lora(model, settings.r, settings.alpha, settings.dropout, settings.target_modules)
    _copy_adapter_weights(model, saved_weights)
    return settings


def load_adapter_weights(model: nn.Module, folder: str | Path) -> None:
    """Overwrite the A and B of a model that already has adapters (resuming a run).

    The saved file must hold exactly the model's adapter keys and shapes.
    """
    if not has_lora(model):
        raise ModelError("the model has no LoRA adapters to load weights into; use load_adapter")
    expected_shapes = {}
    for name, layer in lora_layers(model):
        key_a, key_b = peft_weight_keys(name)
        expected_shapes[key_a] = tuple(layer.lora_A.weight.shape)
        expected_shapes[key_b] = tuple(layer.lora_B.weight.shape)
    _copy_adapter_weights(model, _read_adapter_weights(Path(folder), expected_shapes))


def _read_adapter_weights(folder: Path, expected_shapes: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    weights_path = folder / ADAPTER_WEIGHTS_FILE
    try:
        saved_weights = load_file(str(weights_path))
    except FileNotFoundError:
        raise ModelError(f"no {ADAPTER_WEIGHTS_FILE} in {folder}") from None
    except (OSError, SafetensorError) as error:
        raise ModelError(f"cannot read {weights_path}: {error}") from None
    _check_adapter_weights(saved_weights, expected_shapes, weights_path)
    return saved_weights


def _copy_adapter_weights(model: nn.Module, saved_weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, layer in lora_layers(model):
            key_a, key_b = peft_weight_keys(name)
            layer.lora_A.weight.copy_(saved_weights[key_a])
            layer.lora_B.weight.copy_(saved_weights[key_b])


def _check_adapter_weights(
    saved_weights: dict[str, torch.Tensor], expected_shapes: dict[str, tuple[int, int]], weights_path: Path
) -> None:
    """Raise ModelError unless the saved keys and shapes are exactly the expected ones."""
    missing = sorted(expected_shapes.keys() - saved_weights.keys())
    unexpected = sorted(saved_weights.keys() - expected_shapes.keys())
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelError(
            f"{weights_path} does not fit this model and adapter config: keys {'; '.join(problems)}. "
            "Was the adapter trained on a different base model?"
        )
    wrong_shapes = [
        f"{key}: saved {tuple(saved_weights[key].shape)}, expected {shape}"
        for key, shape in expected_shapes.items()
        if tuple(saved_weights[key].shape) != shape
    ]
    if wrong_shapes:
        raise ModelError(
            f"{weights_path} has {len(wrong_shapes)} weights of the wrong shape (e.g. {wrong_shapes[0]}). "
            "Was the adapter trained on a different base model?"
        )
