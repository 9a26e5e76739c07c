"""The metrics logger's sinks (metrics.jsonl, TensorBoard, sample tables) and the run plots."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, env
from grpo.run.metrics import MetricsLogger, markdown_table, read_metrics


def tensorboard_scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_markdown_table_cuts_escapes_and_formats():
    rows = [{"reward": 0.123456, "done": True, "text": "a|b\nc", "n": 3}, {"reward": None, "text": "x" * 10}]
    assert markdown_table(rows, ["reward", "done", "n", "text"], max_chars=6).split("\n") == [
        "| reward | done | n | text |",
        "|---|---|---|---|",
        "| 0.1235 | yes | 3 | a\\|b … |",
        "| None |  |  | xxxxx… |",
    ]


def test_tensorboard_gets_every_metric_and_a_resume_replaces_the_repeated_steps(tmp_path):
    logger = MetricsLogger(tmp_path, 4, report_to=["tensorboard"])
    for step in (1, 2, 3, 4):
        logger.log(step, {"reward": float(step), "skipped": 0, "note": "text is not a scalar", "nan": float("nan")})
    logger.close()
    # A run resumed from its step-2 checkpoint logs steps 3 and 4 again, with other values.
    logger = MetricsLogger(tmp_path, 4, initial_step=2, truncate_after=2, report_to=["tensorboard"])
    for step in (3, 4):
        logger.log(step, {"reward": 10.0 * step, "skipped": 0})
    logger.close()

    assert tensorboard_scalars(tmp_path / "tensorboard", "reward") == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert [step for step, _ in tensorboard_scalars(tmp_path / "tensorboard", "skipped")] == [1, 2, 3, 4]
    assert [row["reward"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1.0, 2.0, 30.0, 40.0]


def test_no_tensorboard_folder_without_report_to(tmp_path):
    logger = MetricsLogger(tmp_path, 1)
    logger.log(1, {"reward": 1.0})
    logger.close()
    assert not (tmp_path / "tensorboard").exists()


def test_sample_table_goes_to_jsonl_console_and_tensorboard(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = [{"completion": f"answer {i}", "reward": float(i), "terms": {"a": float(i)}} for i in range(5)]
    table = [{**row["terms"], **row} for row in rows]
    logger = MetricsLogger(tmp_path, 1, report_to=["tensorboard"])
    path = logger.log_samples(7, rows, table, columns=["reward", "a", "completion"],
                              console_columns=["reward", "completion"], console_rows=2)
    logger.close()

    assert path == tmp_path / "completions" / "step-000007.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    printed = capsys.readouterr()
    console = printed.out + printed.err
    assert "| 1 | answer 1 |" in console and "answer 2" not in console  # only the first two rows
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    (event,) = accumulator.Tensors("completions/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert event.step == 7 and text.count("| answer") == 5 and "| 4 | 4 | answer 4 |" in text


# --------------------------------------------------------------------------- plots
def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_plot_overlays_runs_and_draws_only_logged_panels(tmp_path):
    import matplotlib.image

    from grpo.run.plot import plot_runs

    grpo_rows = [{"step": s, "reward": 0.1 * s, "rewards/semantic/mean": 0.05 * s, "kl": 0.01 * s,
                  "grad_norm": None if s == 2 else 1.0} for s in (1, 2, 3)]
    sft_rows = [{"step": s, "loss": 3.0 - s} for s in (1, 2)] + [{"step": 2, "eval/loss": 2.5}]
    out = plot_runs([write_run(tmp_path / "a", grpo_rows), write_run(tmp_path / "b", sft_rows)], tmp_path / "p.png")
    image = matplotlib.image.imread(out)
    # reward, semantic term, KL, grad norm, train loss, dev loss: 6 panels, 4 to a row -> 2 rows
    assert image.shape[:2] == (pytest.approx(2 * 3.3 * 110, abs=2), pytest.approx(4 * 4.6 * 110, abs=2))


def test_plot_cli_names_a_folder_without_metrics(tmp_path):
    result = subprocess.run([sys.executable, "-m", "grpo.run.plot", str(tmp_path)], cwd=ROOT, env=env(),
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: run folder '{tmp_path}' has no metrics.jsonl; "
                             "give the out_dir of a GRPO or SFT run\n")
