"""``python -m symbolic.train``: ``derivgen train`` without the other commands."""

import argparse
import sys

from symbolic.train.cli import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m symbolic.train")
add_arguments(parser)
sys.exit(main(parser.parse_args()))
