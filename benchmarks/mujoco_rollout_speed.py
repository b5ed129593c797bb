"""Physics steps per second: MuJoCoRolloutDynamics against a single-threaded ``mj_step`` loop, same run.

One model call steps N full physics states by ``frame_skip`` physics steps each (the planner's batch:
105 sequences x 4 particles = 420 rows). Rows, measured interleaved so that load changes hit all alike:

- ``mj_step loop``: Python loop over the N states: ``mj_setState``, set ``ctrl``, ``mj_step(nstep=frame_skip)``
  (one thread; what a planner without ``mujoco.rollout`` would do),
- ``mujoco.rollout (nthread=T)``: the bare rollout call on preallocated arrays,
- ``MuJoCoRolloutDynamics (nthread=T)``: the full model call (torch in/out, rewards, terminations).

    python benchmarks/mujoco_rollout_speed.py --envs HalfCheetah-v5 Hopper-v5 Ant-v5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch as th
from mujoco import rollout as mj_rollout

from sb3_demo import MuJoCoRolloutDynamics

FULLPHYSICS = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)


def measure(env_id: str, rows: int, repeats: int, threads: list[int]) -> list[tuple[str, float]]:
    env = gym.make(env_id)
    env.reset(seed=0)
    base = env.unwrapped
    model, frame_skip = base.model, base.frame_skip
    rng = np.random.default_rng(0)
    dyn = {t: MuJoCoRolloutDynamics(env, nthread=t) for t in threads}
    state0 = dyn[threads[0]].state_from_env()
    states = state0.repeat(rows, 1)
    qvel = slice(dyn[threads[0]]._qvel_start, dyn[threads[0]]._qvel_start + model.nv)
    states[:, qvel] += th.as_tensor(0.1 * rng.standard_normal((rows, model.nv)))
    actions = th.as_tensor(rng.uniform(-1, 1, (rows, model.nu)))
    states_np, actions_np = states.numpy().copy(), actions.numpy().copy()

    scratch = mujoco.MjData(model)

    def step_loop() -> None:
        for i in range(rows):
            mujoco.mj_setState(model, scratch, states_np[i], FULLPHYSICS)
            scratch.ctrl[:] = actions_np[i]
            mujoco.mj_step(model, scratch, nstep=frame_skip)

    pools = {t: (mj_rollout.Rollout(nthread=t), [mujoco.MjData(model) for _ in range(max(t, 1))]) for t in threads}
    control = np.ascontiguousarray(np.repeat(actions_np[:, None], frame_skip, axis=1))
    out_state = np.empty((rows, frame_skip, mujoco.mj_stateSize(model, FULLPHYSICS)))
    out_sensor = np.empty((rows, frame_skip, model.nsensordata))

    def bare(t: int) -> None:
        pool, datas = pools[t]
        pool.rollout(
            [model] * rows,
            datas,
            states_np,
            control,
            skip_checks=True,
            nstep=frame_skip,
            control_spec=int(mujoco.mjtState.mjSTATE_CTRL),
            state=out_state,
            sensordata=out_sensor,
        )

    candidates = {"mj_step loop (1 thread, Python loop)": step_loop}
    for t in threads:
        candidates[f"mujoco.rollout (nthread={t})"] = lambda t=t: bare(t)
        candidates[f"MuJoCoRolloutDynamics (nthread={t})"] = lambda t=t: dyn[t](states, actions)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    steps = rows * frame_skip
    for t in threads:
        pools[t][0].close()
        dyn[t].close()
    return [(name, steps / statistics.median(ts)) for name, ts in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Ant-v5"])
    parser.add_argument("--rows", type=int, default=420)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({0, os.cpu_count() or 1}))
    args = parser.parse_args()
    th.set_num_threads(1)
    print(f"CPUs: {os.cpu_count()}, rows per call: {args.rows}")
    print()
    print("| env | implementation | physics steps/s (median) | vs mj_step loop |")
    print("|---|---|---|---|")
    for env_id in args.envs:
        results = measure(env_id, args.rows, args.repeats, args.threads)
        baseline = results[0][1]
        for name, rate in results:
            print(f"| {env_id} | {name} | {rate:,.0f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
