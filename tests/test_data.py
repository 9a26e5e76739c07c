import pytest

from grpo.run.data import make_examples, read_jsonl, split_path
from grpo.run.errors import DataError


def write(tmp_path, name, content: bytes | str):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_reads_records_and_fills_ids(tmp_path):
    path = write(tmp_path, "train.jsonl", '{"source": "ཀ", "target": "甲"}\n\n{"source": "ཁ", "target": "乙", "id": "x"}\n')
    records = read_jsonl(path)
    assert [r["id"] for r in records] == ["train-1", "x"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"source": "a", "target": "b"}\n{"source": "a", "target": \n', r"train.jsonl:2: malformed JSON"),
        ('{"source": "a", "target": "b"}\n{"source": "a"}\n', r"train.jsonl:2: field 'target' is missing"),
        ('{"source": "", "target": "b"}\n', r"train.jsonl:1: field 'source' is empty"),
        ('["source", "target"]\n', r"train.jsonl:1: expected a JSON object"),
        ("\n\n", r"'.*train.jsonl' is empty"),
        (b'{"source": "a", "target": "b"}\n{"source": "\xff\xfe"}\n', r"train.jsonl:2: not valid UTF-8"),
    ],
)
def test_bad_files_name_the_line(tmp_path, content, message):
    path = write(tmp_path, "train.jsonl", content)
    with pytest.raises(DataError, match=message):
        read_jsonl(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_split_path_for_folder_and_file(tmp_path):
    write(tmp_path, "train.jsonl", "{}")
    assert split_path(tmp_path, "train") == tmp_path / "train.jsonl"
    assert split_path(tmp_path, "dev") is None
    assert split_path(tmp_path / "train.jsonl", "train") == tmp_path / "train.jsonl"


class PlainTokenizer:
    """A tokenizer without a chat template or BOS token."""

    chat_template = None
    bos_token = None


RECORDS = [{"id": "a", "source": "བོད་ཡིག", "target": "藏文"}, {"id": "b", "source": "ཟླ་བ", "target": "月"}]


def test_mt_examples_forward_and_reverse():
    forward = make_examples(RECORDS, PlainTokenizer(), task="mt", source_lang="bo", target_lang="zh")
    assert forward[0]["prompt"] == (
        "Translate the following Tibetan text into Chinese. Output only the translation.\n\n"
        "Tibetan: བོད་ཡིག\nChinese:"
    )
    assert (forward[0]["target"], forward[0]["target_lang"]) == ("藏文", "zh")
    reverse = make_examples(RECORDS, PlainTokenizer(), task="mt", source_lang="zh", target_lang="bo")
    assert (reverse[0]["source"], reverse[0]["target"], reverse[0]["target_lang"]) == ("藏文", "བོད་ཡིག", "bo")
    assert reverse[0]["prompt"].endswith("Chinese: 藏文\nTibetan:")


def test_direction_must_match_the_data():
    with pytest.raises(DataError, match="does not match the data's languages"):
        make_examples(RECORDS, PlainTokenizer(), source_lang="en", target_lang="zh")


def test_chat_template_is_used_when_present(tiny):
    _, tokenizer = tiny
    example = make_examples(RECORDS, tokenizer)[0]
    assert example["prompt"].startswith("<|im_start|>")
    assert example["prompt"].endswith("<|im_start|>assistant\n")
    assert "བོད་ཡིག" in example["prompt"]
