"""`python export.py ...` is `fastnst export ...`."""
import sys

from fastnst.cli import main

if __name__ == "__main__":
    main(["export", *sys.argv[1:]])
