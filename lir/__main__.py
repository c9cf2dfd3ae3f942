"""``python -m lir``: the same as the ``lir`` command."""

import sys

from lir.cli import main

if __name__ == "__main__":
    sys.exit(main())
