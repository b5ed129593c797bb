"""Accuracy of EnsembleDynamics trained on random-action transitions (default 7 x 4 x 200 ensemble).

Metrics, all on data the model never trained on (a fresh random-action test set, other seed):

- ``nmse``: normalised one-step MSE of the predicted next observation,
  ``mean_d [ MSE_d(pred, next_obs) / Var_d(next_obs) ]``; the prediction is the mean over the elites of
  their predicted means;
- ``delta_nmse``: the same divided by the variance of the change ``next_obs - obs`` instead (stricter);
- ``mse_ratio_vs_no_change``: ``sum_d MSE_d(pred) / sum_d MSE_d(obs)``, the error relative to the
  no-change baseline ``next_obs = obs`` (raw units);
- ``open_loop_nmse[k]``: normalised MSE after ``k`` steps of feeding the model its own (elite-mean)
  predictions along recorded action sequences (k = 1..10);
- ``reward_nmse``: MSE of the learned reward / variance of the reward (when the reward is learned).

    python benchmarks/ensemble_accuracy.py --env Pendulum-v1 --transitions 5000
    python benchmarks/ensemble_accuracy.py --env HalfCheetah-v5 --transitions 10000 --max-epochs 200
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch as th

from sb3_demo import EnsembleDynamics
from sb3_demo.dynamics.rewards import reward_fn_for, termination_fn_for


def collect(env_id: str, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Random-action transitions, with an episode index so that open-loop windows stay in one episode."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows: dict[str, list] = {"obs": [], "act": [], "next_obs": [], "rew": [], "episode": [], "last": []}
    episode = 0
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        for key, value in zip(rows, (obs, action, next_obs, reward, episode, done)):
            rows[key].append(value)
        obs = next_obs
        if done:
            obs, _ = env.reset()
            episode += 1
    return {key: np.asarray(value, dtype=np.float32) for key, value in rows.items()}


@th.no_grad()
def mean_prediction(model: EnsembleDynamics, obs: th.Tensor, act: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
    mean, _ = model.predict_distribution(obs, act)
    mean = mean.mean(dim=0)
    reward = mean[:, model.observation_dim] if model.learn_reward else None
    return obs + mean[:, : model.observation_dim], reward


def evaluate(model: EnsembleDynamics, test: dict[str, np.ndarray], horizon: int = 10) -> dict[str, object]:
    obs, act, next_obs = (th.as_tensor(test[k]) for k in ("obs", "act", "next_obs"))
    pred, reward = mean_prediction(model, obs, act)
    var = next_obs.var(dim=0)
    mse = ((pred - next_obs) ** 2).mean(dim=0)
    no_change = ((obs - next_obs) ** 2).mean(dim=0)
    out: dict[str, object] = {
        "nmse": float((mse / var).mean()),
        "no_change_nmse": float((no_change / var).mean()),
        "delta_nmse": float((mse / (next_obs - obs).var(dim=0)).mean()),
        "mse_ratio_vs_no_change": float(mse.sum() / no_change.sum()),
    }
    if reward is not None:
        rew = th.as_tensor(test["rew"])
        out["reward_nmse"] = float(((reward - rew) ** 2).mean() / rew.var())
    # open-loop: windows of `horizon` steps inside one episode
    episode, last = test["episode"], test["last"]
    n = len(episode)
    starts = [
        i
        for i in range(0, n - horizon, 5)
        if episode[i + horizon - 1] == episode[i] and not last[i : i + horizon - 1].any()
    ]
    idx = th.as_tensor(starts)
    state = obs[idx]
    errors = []
    for k in range(horizon):
        state, _ = mean_prediction(model, state, act[idx + k])
        errors.append(float((((state - next_obs[idx + k]) ** 2).mean(dim=0) / var).mean()))
    out["open_loop_nmse"] = errors
    out["open_loop_windows"] = len(starts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--transitions", type=int, default=5000)
    parser.add_argument("--test-transitions", type=int, default=2000)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    train = collect(args.env, args.transitions, seed=args.seed)
    test = collect(args.env, args.test_transitions, seed=args.seed + 1000)
    model = EnsembleDynamics(
        train["obs"].shape[1],
        train["act"].shape[1],
        reward_fn=reward_fn_for(args.env),
        termination_fn=termination_fn_for(args.env),
        seed=args.seed,
    )
    start = time.perf_counter()
    stats = model.fit(
        train["obs"], train["act"], train["next_obs"], train["rew"], max_epochs=args.max_epochs, patience=args.patience
    )
    fit_seconds = time.perf_counter() - start
    result = {
        "env": args.env,
        "transitions": args.transitions,
        "seed": args.seed,
        "fit_seconds": fit_seconds,
        "fit": stats,
        "test": evaluate(model, test),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
