"""``python -m cnnext``: the command line (see :mod:`cnnext.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
