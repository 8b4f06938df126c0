"""Entry point for `ray job submit -- python pipelines/collect_dataset.py [rllib-o2o collect flags]`."""

import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the repo root is the cwd but not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["collect", *sys.argv[1:]]))
