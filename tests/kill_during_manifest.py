"""`python tests/kill_during_manifest.py STEP KEY=VALUE...`: `python -m grpo KEY=VALUE...`, killed by SIGKILL
halfway through writing checkpoint STEP's manifest, as a power cut would leave it: the manifest torn, the
checkpoint folder not yet renamed into place."""

import os
import runpy
import signal
import sys
from pathlib import Path

from grpo.run import checkpoint

STEP = int(sys.argv[1])
write_whole_manifest = checkpoint.write_manifest


def write_half_then_die(folder):
    write_whole_manifest(folder)
    if Path(folder).name == f".tmp-step-{STEP:06d}":
        manifest = Path(folder) / checkpoint.MANIFEST_FILE
        manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
        os.kill(os.getpid(), signal.SIGKILL)


checkpoint.write_manifest = write_half_then_die
sys.argv = ["grpo", *sys.argv[2:]]
runpy.run_module("grpo", run_name="__main__", alter_sys=True)
