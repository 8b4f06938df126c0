"""Entry point for `ray job submit -- python pipelines/run_o2o.py [rllib-o2o run flags]`.

Joins the cluster when RAY_ADDRESS is set (as under `ray job submit`), else
starts a local Ray. Same flags as `rllib-o2o run`.
"""

import sys

from rllib_o2o.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
