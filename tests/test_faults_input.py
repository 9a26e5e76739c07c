"""Bad input and odd settings: refused before the work starts, in one line naming the file, key or value.

Each test is one promise, tried through the command line's own `main` as a
user would meet the fault (helpers from test_faults).

  - a prompt longer than the model can take is named by file and line at data load
  - a run folder that cannot be written is named in one line: read-only, a file, a TensorBoard folder
"""

import errno
import json
import os
from pathlib import Path

import pytest

from grpo import trainer
from grpo.cli import main as grpo_main
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


# -------------------------------------------------------------- file system
def test_an_out_dir_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder\n")
    error_line(*run_cli(capsys, grpo_args(tmp_path / "run"))[::2],
               f"out_dir '{tmp_path / 'run'}' is a file, not a folder; choose another out_dir")


def test_an_out_dir_on_a_read_only_file_system_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "mnt" / "run"
    real_mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "mnt")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    error_line(*run_cli(capsys, grpo_args(out))[::2],
               f"out_dir '{out}' cannot be written (Read-only file system: '", "choose another out_dir")


def test_an_unwritable_tensorboard_folder_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the folders were checked")

    monkeypatch.setattr(trainer, "load_model", load_model)
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("a file where the TensorBoard folder goes\n")
    error_line(*run_cli(capsys, grpo_args(out, 'report_to=["tensorboard"]'))[::2],
               f"the TensorBoard folder '{out / 'tensorboard'}' is not a writable folder (Not a directory)")


def test_a_later_write_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    def run(cfg):
        raise PermissionError(errno.EACCES, "Permission denied", f"{cfg.out_dir}/eval/step-000001.jsonl")

    error_line(*run_cli(capsys, grpo_args(tmp_path / "run"), lambda argv: grpo_main(argv, run=run))[::2],
               f"cannot write '{tmp_path / 'run'}/eval/step-000001.jsonl' (Permission denied); no checkpoint had "
               "been written yet: make it writable, then start again with overwrite=true")
