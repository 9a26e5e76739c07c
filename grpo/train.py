"""Command line: `python -m grpo.train [PRESET.toml] [key=value ...]`.

    python -m grpo.train configs/mt.toml
    python -m grpo.train configs/mt.toml model=gemma3-270m max_steps=50 out_dir=runs/gemma
    python -m grpo.train --help        # every key with its default
"""

from __future__ import annotations

import errno
import sys

from grpo import run_folder
from grpo.config import GRPOConfig, describe, load_config
from grpo.errors import UserError


def split_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """The optional preset file (first argument without '=') and the key=value overrides."""
    preset = argv[0] if argv and "=" not in argv[0] else None
    return preset, argv[1:] if preset else argv


def main(argv: list[str] | None = None, config_class=GRPOConfig, run=None, usage: str | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage or __doc__)
        print(describe(config_class))
        return 0
    cfg = None
    try:
        preset, overrides = split_args(argv)
        cfg = load_config(config_class, preset, overrides)
        if run is None:
            from grpo.trainer import train as run
        run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(run_folder.interrupted_note(cfg.out_dir) if cfg is not None else "interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        # A checkpoint write says so itself (CheckpointError); this is any other write: metrics, eval outputs.
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) or cfg is None:
            raise
        from grpo.checkpoint import what_is_left

        print(f"error: disk full ({err.strerror}{f': {err.filename}' if err.filename else ''}); "
              f"{what_is_left(cfg.out_dir)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
