"""The English->Chinese data: data/mt's records with English sources, plus further CLDR terms."""

import json

import pytest
from data_scripts import DATA_DIR, load_data_script

build_mt_en_zh = load_data_script("build_mt_en_zh")
build_general = load_data_script("build_general")


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_english_source_keeps_the_chinese_target_and_drops_tibetan():
    record = {"id": "cldr-language-it", "source": "ཨི་ཊ་ལིའི་སྐད།", "target": "意大利语", "english": "Italian",
              "kind": "cldr-language"}
    assert build_mt_en_zh.english_source(record) == {"id": "cldr-language-it", "source": "Italian",
                                                     "target": "意大利语", "kind": "cldr-language"}


def test_split_shares_are_seeded_disjoint_and_complete():
    records = [{"id": f"r{i:03d}"} for i in range(100)]
    splits = build_mt_en_zh.split_terms(records, seed=0)
    assert [len(splits[name]) for name in ("dev", "test", "train")] == [4, 12, 84]
    ids = [r["id"] for members in splits.values() for r in members]
    assert sorted(ids) == [r["id"] for r in records]
    assert build_mt_en_zh.split_terms(list(reversed(records)), seed=0) == splits  # input order does not matter
    assert build_mt_en_zh.split_terms(records, seed=1) != splits


def test_committed_data_is_what_the_builder_writes():
    babel = pytest.importorskip("babel")
    if babel.__version__ != "2.18.0":
        pytest.skip(f"the committed data is for babel 2.18.0, found {babel.__version__}")
    built = build_mt_en_zh.build(DATA_DIR / "mt", seed=0)
    for split in ("train", "dev", "test"):
        assert built[split] == read(DATA_DIR / "mt-en-zh" / f"{split}.jsonl")
    # Every data/mt record sits in the same split, with its English text as the source.
    for split in ("train", "dev", "test"):
        english = {r["id"]: r["source"] for r in built[split]}
        for record in read(DATA_DIR / "mt" / f"{split}.jsonl"):
            assert english[record["id"]] == record["english"]


def test_cloze_items_take_sentence_final_plain_words_with_enough_context():
    text = ("Statements run in order. The interpreter reads each statement in turn and executes it before "
            "moving on to the next one in the file. Call len() on it. Names like __spam are mangled by the "
            "compiler at compile time.")
    record = {"id": "pydoc-x-p1", "text": text, "source": "pydoc_data/topics.py"}
    items = build_general.cloze_items(record, context_chars=120)
    # Sentence 1's context is under 100 characters; "it." ends in a two-letter word, which is no match.
    assert [item["target"] for item in items] == ["file", "time"]
    assert [item["id"] for item in items] == ["pydoc-x-p1-s2", "pydoc-x-p1-s3"]
    assert items[1]["context"].endswith("mangled by the compiler at compile")
    assert all(len(item["context"]) <= 120 for item in items)
    assert not items[1]["context"].startswith(" ")
