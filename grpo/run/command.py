"""The command line every trainer shares: `python -m grpo` and `python -m baselines.sft` are `run_command`."""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path

from grpo.run import distributed as dist
from grpo.run import run_folder
from grpo.run.config import describe, load_config
from grpo.run.errors import USER_ERRORS


def split_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """The optional preset file and the key=value overrides.

    The first argument is the preset when it is an existing file (its path may
    hold '=': runs/lr=1e-4/config.toml) or has no '='.
    """
    preset = argv[0] if argv and (Path(argv[0]).is_file() or "=" not in argv[0]) else None
    return preset, argv[1:] if preset else argv


def run_command(argv: list[str] | None, config_class, run, usage: str) -> int:
    """A trainer's main: load the config from the command line and `run` it.

    A user's mistake is one line on stderr (exit 2); Ctrl-C says where the run
    can be continued from (130); SIGTERM ends after a checkpoint (143); a full
    disk or an unwritable path is named in one line (2).
    """
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        print(describe(config_class))
        return 0
    cfg = None
    try:
        preset, overrides = split_args(argv)
        cfg = load_config(config_class, preset, overrides)
        run(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(run_folder.interrupted_note(cfg.out_dir) if cfg is not None else "interrupted", file=sys.stderr)
        return 130
    except run_folder.Terminated as stop:
        if dist.is_main():
            print(stop, file=sys.stderr)
        return 128 + signal.SIGTERM
    except OSError as err:
        # A checkpoint write says so itself (CheckpointError); this is any other write: metrics, eval outputs.
        if cfg is None or not (err.errno in (errno.ENOSPC, errno.EDQUOT) or unwritable_path(err)):
            raise
        from grpo.run.checkpoint import what_is_left

        if unwritable_path(err):
            print(f"error: cannot write '{err.filename}' ({err.strerror}); "
                  f"{what_is_left(cfg.out_dir, 'make it writable')}", file=sys.stderr)
        else:
            print(f"error: disk full ({err.strerror}{f': {err.filename}' if err.filename else ''}); "
                  f"{what_is_left(cfg.out_dir)}", file=sys.stderr)
        return 2
    return 0


# Errors of the file system, not of the program: a read-only mount, a permission, a file where a folder should be.
PATH_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


def unwritable_path(err: OSError) -> bool:
    """Whether an OSError is a path the run cannot write, which the message can name."""
    return err.errno in PATH_ERRNOS and bool(err.filename)
