"""Bad input and odd settings: refused before the work starts, in one line naming the file, key or value.

Each test is one promise, tried through the command line's own `main` as a
user would meet the fault (helpers from test_faults).

  - a prompt longer than the model can take is named by file and line at data load
"""

import json
from pathlib import Path

import pytest

from test_faults import error_line, grpo_args, repo_root, run_cli  # noqa: F401 - repo_root is an autouse fixture


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def pair(source: str, target: str = "你好") -> str:
    return json.dumps({"source": source, "target": target}, ensure_ascii=False)


# ------------------------------------------------------------ prompt length
def test_a_prompt_beyond_the_models_positions_is_named_by_file_and_line(tmp_path, capsys):
    train = write_jsonl(tmp_path / "data" / "train.jsonl",
                        [pair("hello"), "", pair("good morning"), pair("hello " * 2100), pair("thanks")])
    args = grpo_args(tmp_path / "run", f"data={train.parent}", "max_prompt_tokens=0", "max_steps=1")
    error_line(*run_cli(capsys, args)[::2], f"{train}:4: the prompt has ", "tokens; the model takes 2044 (2048 "
               "positions less max_new_tokens = 4)", "set max_prompt_tokens = 2044 to leave such examples out")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

    code, out, err = run_cli(capsys, [*args, "max_prompt_tokens=2044"])  # ... which leaves it out, counted
    assert code == 0, err
    assert f"{train}: 1 of 4 examples have prompts over 2044 tokens and are left out" in out
