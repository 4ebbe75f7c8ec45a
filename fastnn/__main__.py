"""``python -m fastnn train | evaluate | profile | bench-info``; see :mod:`fastnn.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m fastnn"))
