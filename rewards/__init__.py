"""Rewards for GRPO: semantic similarity, script consistency, BLEU/chrF, length.

Every reward maps (prompts, completions, examples) to a RewardOutput with one
value per completion; `build_reward` combines them into the training reward.
"""

from rewards.base import Reward, RewardOutput, WeightedSum
from rewards.embedding import (
    EmbeddingCosineReward,
    Encoder,
    EncoderCoverageWarning,
    TransformersEncoder,
    USEEncoder,
    build_encoder,
    threshold_rescale,
)
from rewards.factory import (
    REWARD_NAMES,
    CustomReward,
    build_reward,
)
from rewards.language import (
    LANGUAGE_SCRIPTS,
    SCRIPT_RANGES,
    LanguageConsistencyReward,
    is_consistent,
    script_of,
)
from rewards.length import LengthGuardReward
from rewards.lexical import ChrfReward, SentenceBleuReward
from rewards.repetition import RepetitionPenalty

__all__ = [
    "LANGUAGE_SCRIPTS",
    "REWARD_NAMES",
    "SCRIPT_RANGES",
    "ChrfReward",
    "CustomReward",
    "EmbeddingCosineReward",
    "Encoder",
    "EncoderCoverageWarning",
    "LanguageConsistencyReward",
    "LengthGuardReward",
    "RepetitionPenalty",
    "Reward",
    "RewardOutput",
    "SentenceBleuReward",
    "TransformersEncoder",
    "USEEncoder",
    "WeightedSum",
    "build_encoder",
    "build_reward",
    "is_consistent",
    "script_of",
    "threshold_rescale",
]
