"""Entry point for `ray job submit -- python pipelines/tune_aca.py [rllib-o2o tune flags]`.

Searches ACA's online knobs with Ray Tune from one aligned checkpoint (stages 1-2
run once, or reused with --from-run RUN_DIR). Joins the cluster when RAY_ADDRESS
is set (as under `ray job submit`), else starts a local Ray. Same flags as
`rllib-o2o tune`; re-running the same command resumes an interrupted experiment.
"""

import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the repo root is the cwd but not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
