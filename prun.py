#!/usr/bin/env python3
"""Launch a paracel job: ``prun.py -w 4 -p 2 -c configs/wordcount.json`` (see ``--help``)."""
import sys

from paracel.launch import main

if __name__ == "__main__":
    sys.exit(main())
