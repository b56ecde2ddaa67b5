"""`python train.py ...` is `fastnst train ...`."""
import sys

from fastnst.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
