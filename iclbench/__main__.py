"""`python -m iclbench` and `torchrun ... -m iclbench`: the `iclbench` command."""

import sys

from iclbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
