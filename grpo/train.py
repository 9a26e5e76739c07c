"""`python -m grpo.train`, the command line's former name; it runs `python -m grpo` until its removal on 2027-03-01."""

import sys

from grpo.cli import main

if __name__ == "__main__":
    print("note: `python -m grpo.train` is now `python -m grpo` (same arguments); "
          "the old name will be removed on 2027-03-01", file=sys.stderr)
    sys.exit(main())
