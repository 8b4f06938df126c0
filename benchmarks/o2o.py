"""The O2O comparison (ACA vs ablations vs baselines): `rllib-o2o bench` as a script.

    python benchmarks/o2o.py --profile small --out runs/bench-small
    ray job submit --working-dir . -- python benchmarks/o2o.py --profile paper --num-env-runners 8

Joins the cluster when RAY_ADDRESS is set, else starts a local Ray. Re-running the
same command resumes an interrupted benchmark; finished runs are never redone.
Same flags as `rllib-o2o bench`; the report lands in <out>/report/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
