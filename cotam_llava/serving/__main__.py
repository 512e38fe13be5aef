"""``python -m cotam_llava.serving {serve,chat} ...`` (the lead wires the same into ``cotam``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
