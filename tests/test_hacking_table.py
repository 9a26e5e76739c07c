"""The hacking table on real data: Tatoeba's dev sentences under the default reward and encoder.

The reference must out-score, on average, every answer a policy could learn
instead of translating: the copied source, an empty answer, one repeated
character, the best constant answer (chosen on a cold-start-sized pool of
training pairs), the reference doubled or followed by the source, and a
shuffled reference. docs/TRAINING.md shows the same table
(`python -m eval.hacking configs/mt.toml dev_limit=0`).
"""

import numpy as np
import pytest
from data_scripts import load_data_script

from eval.hacking import best_constant_answer, hacking_table
from rewards import build_reward

build_tatoeba = load_data_script("build_tatoeba")

POOL_SIZE = 320          # the cold start's pool (configs/cold_start_mt.toml)
# tau = 0 is the preset's; 0.2 is about what `python -m grpo.tau` derives from a cold start.
TAUS = (0.0, 0.2)


def examples_of(records):
    return [{"id": r["id"], "prompt": "", "source": r["source"], "target": r["target"], "targets": r["targets"],
             "target_lang": "zh"} for r in records]


@pytest.fixture(scope="module")
def splits():
    pytest.importorskip("opencc")
    # make install downloads the wheel into the checkout; make data-mt does too.
    try:
        wheel = build_tatoeba.newest_wheel()
    except build_tatoeba.BuildError as missing:
        pytest.skip(str(missing))
    records, _ = build_tatoeba.build(build_tatoeba.read_wheel(wheel))
    return records


@pytest.fixture(scope="module")
def dev_and_pool(splits):
    train = splits["train"]
    pool = [train[i] for i in sorted(np.random.default_rng(0).choice(len(train), size=POOL_SIZE, replace=False))]
    return examples_of(splits["dev"]), examples_of(pool)


def table_for(weights, dev, pool, **options):
    reward = build_reward(weights, **options)
    constant, _ = best_constant_answer(reward, pool)
    return hacking_table(reward, dev, constant)


@pytest.mark.parametrize("tau", TAUS)
def test_the_paper_reward_pays_the_reference_more_than_any_trivial_answer(dev_and_pool, tau):
    dev, pool = dev_and_pool
    assert len(dev) == 500
    table = table_for({"semantic": 1.5, "language": 1.0}, dev, pool, tau=tau)
    reference = table.pop("reference")["reward"]
    assert reference == pytest.approx(2.5)  # cosine 1 with itself, Han only
    for name, row in table.items():
        assert row["reward"] < reference, name
    # The cross-lingual encoder finds the untranslated source close to its translation.
    assert table["English source copied"]["semantic/cosine"] > 0.6


def test_the_guards_open_a_wide_margin(dev_and_pool):
    """Gated by the language check and with the length-ratio penalty, nothing trivial comes near the reference."""
    dev, pool = dev_and_pool
    paper = table_for({"semantic": 1.5, "language": 1.0}, dev, pool, tau=0.2)
    guarded = table_for({"semantic": 1.5, "language": 1.0, "length_ratio": 1.0}, dev, pool, tau=0.2,
                        language_gate=True)
    reference = guarded.pop("reference")["reward"]
    assert reference == pytest.approx(2.5)
    # Paper reward: the doubled reference keeps over 90% of the reference's reward.
    assert paper["reference doubled"]["reward"] > 0.9 * reference
    for name, row in guarded.items():
        assert row["reward"] < 0.8 * reference, name
    # The gate: untranslated text earns nothing at all.
    assert guarded["English source copied"]["reward"] == 0.0
    assert guarded["reference + English source"]["reward"] == 0.0
