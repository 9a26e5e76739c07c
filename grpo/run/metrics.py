"""The one metrics logger: a JSONL line per step, a tqdm progress bar, and TensorBoard when asked.

GRPO and SFT both log through `MetricsLogger` (the dev evaluations among
their steps), so every training run folder has the same `metrics.jsonl` layout: one JSON object per line with `step`,
wall-clock `time` and the metrics of that step. With `report_to=["tensorboard"]`
the same numbers, under the same names, also go to `<run>/tensorboard/`.
Sample tables (`log_samples`) go to `<run>/completions/step-N.jsonl`, a few
rows to the console, and all rows to TensorBoard as text.
"""

from __future__ import annotations

import json
import math
import os
import time
import weakref
from pathlib import Path

from tqdm.auto import tqdm

from grpo.run.errors import ConfigError, DataError


def _plain(value):
    """JSON-safe scalar: tensors and numpy numbers become floats, NaN/inf become null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def tensorboard_writer():
    """torch's SummaryWriter class, or a ConfigError saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError('report_to = ["tensorboard"] needs the tensorboard package: pip install -e ".[tensorboard]" '
                          '(or pip install tensorboard), or leave report_to empty') from None
    return SummaryWriter


def markdown_table(rows: list[dict], columns: list[str], max_chars: int = 60) -> str:
    """A Markdown table of `columns` of `rows`; cells are cut at max_chars, floats shown with 4 digits.

    Markdown reads as a table on a console and renders as one in TensorBoard's text tab.
    """
    def cell(value) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.4g}"
        text = str(value).replace("\n", " \u23ce ").replace("|", "\\|")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


class MetricsLogger:
    """Append metrics to `<run_dir>/<name>` and show the chosen keys on a progress bar.

    Args:
        run_dir: the run folder (created if missing).
        total_steps: length of the progress bar.
        bar_keys: metric names shown on the bar, e.g. ("reward", "kl").
        enabled: False on every process but rank 0 in multi-process runs.
        initial_step: where the bar starts on resume.
        report_to: extra sinks; "tensorboard" writes every metric to <run_dir>/tensorboard/.
    """

    def __init__(self, run_dir, total_steps: int, bar_keys=("reward", "kl"), enabled: bool = True,
                 initial_step: int = 0, name: str = "metrics.jsonl", desc: str = "train",
                 truncate_after: int | None = None, report_to=()):
        self.enabled = enabled
        self.bar_keys = bar_keys
        self.start = time.time()
        self.tensorboard = None
        if not enabled:
            return
        self.run_dir = Path(run_dir)
        if "tensorboard" in report_to:
            # purge_step hides the events a resumed run is about to write again.
            self.tensorboard = tensorboard_writer()(
                str(self.run_dir / "tensorboard"), purge_step=None if truncate_after is None else truncate_after + 1)
        self.path = Path(run_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.exists():
            # A resumed run repeats the steps after its checkpoint: drop their old lines.
            rows, torn = read_metrics_of_interrupted_run(self.path)
            if torn is not None:
                print(f"{self.path}: dropped its last line, torn by an interrupted write: {torn[:60]!r}")
            kept = [row for row in rows if row["step"] <= truncate_after]
            # Replaced in one rename: a kill mid-rewrite must not lose the lines being kept.
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        self.file = open(self.path, "a", encoding="utf-8")
        self.bar = tqdm(total=total_steps, initial=initial_step, desc=desc, dynamic_ncols=True)
        _open_loggers.add(self)

    def log(self, step: int, metrics: dict, advance: bool = True) -> None:
        """Write one line {"step", "time", **metrics}; advance the bar by one step if asked."""
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time() - self.start, 3)}
        row.update({key: _plain(value) for key, value in metrics.items()})
        self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, step)
        shown = {k: f"{row[k]:.3g}" for k in self.bar_keys if isinstance(row.get(k), (int, float))}
        if shown:
            self.bar.set_postfix(shown, refresh=False)
        if advance:
            self.bar.update(1)

    def log_samples(self, step: int, rows: list[dict], table: list[dict], columns: list[str],
                    console_columns: list[str], console_rows: int) -> Path | None:
        """Write `rows` to completions/step-N.jsonl; show the first `console_rows` of `table` (the rows
        flattened for display) above the bar, and all of it in TensorBoard's text tab under "completions"."""
        if not self.enabled:
            return None
        path = self.run_dir / "completions" / f"step-{step:06d}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        self.message(f"completions at step {step} ({min(console_rows, len(table))} of {len(table)}; all in {path})\n"
                     + markdown_table(table[:console_rows], console_columns))
        if self.tensorboard is not None:
            self.tensorboard.add_text("completions", markdown_table(table, columns, max_chars=500), step)
        return path

    def message(self, text: str) -> None:
        """Print a line above the bar without breaking it."""
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
            _open_loggers.discard(self)


_open_loggers: weakref.WeakSet[MetricsLogger] = weakref.WeakSet()


def close_open_loggers() -> None:
    """Close the loggers a run left open when it ended with an exception, so that a message starts on its own line."""
    for logger in list(_open_loggers):
        logger.close()


def read_metrics(path) -> list[dict]:
    """All rows of a metrics.jsonl file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_metrics_of_interrupted_run(path) -> tuple[list[dict], str | None]:
    """The rows of a metrics.jsonl that a crash, power cut or full disk may have cut short, and its torn last line.

    Only the last line can be torn (lines are appended and flushed one at a
    time); a line elsewhere that is not JSON is damage, a DataError naming it.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows, torn = [], None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise DataError(f"{path}:{number}: not a JSON line ({err.msg}); delete or repair that line, "
                                "then resume again") from None
            torn = line
    return rows, torn
