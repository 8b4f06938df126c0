"""Entry point for `ray job submit -- python pipelines/run_o2o.py [rllib-o2o run flags]`.

Joins the cluster when RAY_ADDRESS is set (as under `ray job submit`), else
starts a local Ray. Same flags as `rllib-o2o run`.
"""

import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the repo root is the cwd but not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
