"""Import the data-building scripts under data/, which live outside any package."""

import importlib.util
import sys
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def load_data_script(name: str):
    """Import data/<name>.py as module `name`."""
    spec = importlib.util.spec_from_file_location(name, DATA_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while being created.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
