"""The oracle alignment on Pendulum-v1: Z regressed on pi0's true value, to test whether Z's quality causes a dip.

    python experiments/pendulum_oracle_z.py runs/emb/z10k runs/emb/oracle
    rllib-o2o run --out runs/emb/oracle <the source run's flags>      # its online stage, from the oracle critic

Copies the source run's offline stage, dataset, config and alignment into the new run directory, then
replaces the aligned critics: Z_i(s) is regressed on Monte-Carlo V^pi0(s) (experiments/pendulum_values.py's
exact dynamics) over the dataset's states and 5k states pi0 visits, and R_i = Z_i by the usual surgery.
Not a method (it needs the simulator's state): an upper bound on what a better Z can do. Seeded; one core.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pendulum_values import discounted_return, load_module, observation, pendulum_step, policy_torque  # noqa: E402

from rllib_o2o.algorithms.alignment.z_fit import z_distill_step  # noqa: E402
from rllib_o2o.data.schema import read_dataset  # noqa: E402
from rllib_o2o.networks import EnsembleMLP, critic_from_baseline  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a finished run directory (offline/, alignment/, config.json)")
    p.add_argument("out", type=Path, help="the new run directory (must not exist)")
    p.add_argument("--rollouts", type=int, default=8)
    p.add_argument("--horizon", type=int, default=400)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--fit-steps", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new run directory")
    args.out.mkdir(parents=True)
    for name in ("offline", "datasets", "alignment", "config.json"):
        if (args.source / name).is_dir():
            shutil.copytree(args.source / name, args.out / name)
        elif (args.source / name).exists():
            shutil.copy(args.source / name, args.out / name)
    module_path = args.out / "alignment" / "module" / "module.pt"
    state = torch.load(module_path, weights_only=False)
    actor, _ = load_module(module_path)
    config = json.loads((args.source / "config.json").read_text())
    dataset = config.get("dataset") or str(next((args.source / "datasets").iterdir()))
    obs = torch.as_tensor(np.asarray(read_dataset(dataset)[0]["obs"]), dtype=torch.float32)
    theta, theta_dot = torch.atan2(obs[:, 1], obs[:, 0]), obs[:, 2]
    th, thd, visited = torch.empty(25).uniform_(-math.pi, math.pi), torch.empty(25).uniform_(-1, 1), []
    for _ in range(200):  # 25 stochastic episodes of pi0
        visited.append(torch.stack([th, thd], -1))
        th, thd, _ = pendulum_step(th, thd, policy_torque(actor, observation(th, thd)))
    visited = torch.cat(visited)
    theta, theta_dot = torch.cat([theta, visited[:, 0]]), torch.cat([theta_dot, visited[:, 1]])
    value = discounted_return(actor, theta.repeat(args.rollouts), theta_dot.repeat(args.rollouts), args.gamma,
                              args.horizon).view(args.rollouts, -1).mean(0)
    states = observation(theta, theta_dot)
    z = EnsembleMLP(2, 3, 1, (256, 256))
    optimizer = torch.optim.Adam(z.parameters(), lr=1e-3)
    for _ in range(args.fit_steps):
        rows = torch.randint(len(states), (256,))
        z_distill_step(z, optimizer, states[rows], value[rows])  # the same regression as aca-distilled-z's
    with torch.no_grad():
        rmse = float((z(states).squeeze(-1).min(0).values - value).pow(2).mean().sqrt())
    r = critic_from_baseline(z, 1)
    for k, v in r.state_dict().items():
        state[f"critic.{k}"] = v.detach().clone()
        state[f"target_critic.{k}"] = v.detach().clone()
    torch.save(state, module_path)
    done_path = args.out / "alignment" / "DONE.json"
    done = json.loads(done_path.read_text())
    done["z_source"] = "oracle: Monte-Carlo V^pi0 (experiments/pendulum_oracle_z.py)"
    done["oracle_rmse"] = rmse
    done_path.write_text(json.dumps(done, indent=1))
    print(json.dumps({"out": str(args.out), "states": len(states), "oracle_rmse": rmse}))


if __name__ == "__main__":
    main()
