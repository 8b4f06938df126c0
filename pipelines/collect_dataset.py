"""Entry point for `ray job submit -- python pipelines/collect_dataset.py [rllib-o2o collect flags]`."""

import sys

from rllib_o2o.cli import main

if __name__ == "__main__":
    sys.exit(main(["collect", *sys.argv[1:]]))
