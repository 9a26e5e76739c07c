"""`python -m grpo [PRESET.toml] [key=value ...]`: see grpo.cli."""

import sys

from grpo.cli import main

sys.exit(main())
