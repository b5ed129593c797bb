"""How good can a linear policy get on Pendulum-v1? A search over the whole policy class, on the exact dynamics.

Issue #7 asks a linear policy (sb3-contrib ARS's ``LinearPolicy``: ``a = clip(W obs, -2, 2)``, obs possibly
normalised by RL Zoo's VecNormalize) to reach a mean return of -200 on Pendulum-v1. This script searches
the *affine* class ``a = clip(W obs + b, -2, 2)`` (a superset: a fixed normalisation ``(obs - m) / s`` only
changes W and b), and its tanh-squashed twin ``a = 2 tanh(W obs + b)``, for the best mean return over
``--starts`` of gymnasium's own initial states:

1. a global random search over wide gains (|W| <= 50, |b| <= 5: bang-bang controllers included),
2. the cross-entropy method from the best random candidates and from zero.

Returns are computed with a vectorised numpy copy of gymnasium's Pendulum-v1 (checked against
``gymnasium.make("Pendulum-v1")`` on a random policy before the search); the best policy found is then
re-evaluated with gymnasium itself on ``--starts`` fresh initial states.

    python benchmarks/linear_policy_ceiling.py --starts 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

RESULTS = Path(__file__).parent / "results"
MAX_SPEED, MAX_TORQUE, DT, G = 8.0, 2.0, 0.05, 10.0


def action(params: np.ndarray, obs: np.ndarray, squash: str) -> np.ndarray:
    """params (P, 4) = [W (3), b]; obs (P, N, 3) -> actions (P, N)."""
    z = (obs * params[:, None, :3]).sum(-1) + params[:, None, 3]
    return MAX_TORQUE * np.tanh(z) if squash == "tanh" else np.clip(z, -MAX_TORQUE, MAX_TORQUE)


def returns(params: np.ndarray, theta0: np.ndarray, thdot0: np.ndarray, squash: str) -> np.ndarray:
    """Mean 200-step return of each of P policies over the N starts: (P, 4) -> (P,)."""
    theta = np.tile(theta0, (params.shape[0], 1))
    thdot = np.tile(thdot0, (params.shape[0], 1))
    total = np.zeros_like(theta)
    for _ in range(200):  # gymnasium's Pendulum-v1 step, m = l = 1
        u = action(params, np.stack([np.cos(theta), np.sin(theta), thdot], -1), squash)
        angle = (theta + np.pi) % (2 * np.pi) - np.pi
        total -= angle**2 + 0.1 * thdot**2 + 0.001 * u**2
        thdot = np.clip(thdot + (3 * G / 2 * np.sin(theta) + 3.0 * u) * DT, -MAX_SPEED, MAX_SPEED)
        theta = theta + thdot * DT
    return total.mean(1)


def gym_starts(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    env = gym.make("Pendulum-v1")
    states = []
    for i in range(count):
        env.reset(seed=seed + i)
        states.append(np.array(env.unwrapped.state))  # type: ignore[attr-defined]
    s = np.array(states)
    return s[:, 0], s[:, 1]


def gym_return(params: np.ndarray, count: int, seed: int, squash: str) -> float:
    """Mean return of one affine policy over ``count`` episodes of gymnasium's own Pendulum-v1."""
    env = gym.make("Pendulum-v1")
    total = 0.0
    for i in range(count):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            u = action(params[None], np.asarray(obs)[None, None], squash).reshape(1)
            obs, reward, terminated, truncated, _ = env.step(u.astype(np.float32))
            total += float(reward)
            done = terminated or truncated
    return total / count


def cem(
    start: np.ndarray,
    std: np.ndarray,
    evaluate: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    iterations: int = 30,
) -> tuple[float, np.ndarray]:
    """Cross-entropy method from ``start``: 300 candidates, top 30, ``iterations`` rounds; the best seen."""
    mean, best = start.copy(), (-np.inf, start.copy())
    for _ in range(iterations):
        cand = mean + std * rng.standard_normal((300, 4))
        r = evaluate(cand)
        top = np.argsort(r)[-30:]
        mean, std = cand[top].mean(0), cand[top].std(0) + 1e-2
        if r[top[-1]] > best[0]:
            best = (float(r[top[-1]]), cand[top[-1]])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--random", type=int, default=20_000, help="random candidates per squashing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    theta0, thdot0 = gym_starts(args.starts, seed=1_000 * args.seed)

    probe = rng.normal(0, 2, size=4)  # the numpy copy against gymnasium, same starts
    ours = returns(probe[None], theta0, thdot0, "clip")[0]
    theirs = gym_return(probe, args.starts, 1_000 * args.seed, "clip")
    assert abs(ours - theirs) < 1e-3 * abs(theirs), f"numpy Pendulum {ours} != gymnasium {theirs}"

    out: dict[str, dict[str, object]] = {}
    for squash in ("clip", "tanh"):

        def evaluate(p: np.ndarray, squash: str = squash) -> np.ndarray:
            return np.concatenate([returns(p[i : i + 2000], theta0, thdot0, squash) for i in range(0, len(p), 2000)])

        cand = np.concatenate([rng.uniform(-50, 50, (args.random, 3)), rng.uniform(-5, 5, (args.random, 1))], 1)
        r = evaluate(cand)
        runs = [cem(np.zeros(4), np.full(4, 5.0), evaluate, rng)]
        runs += [cem(cand[k], np.abs(cand[k]) * 0.3 + 0.5, evaluate, rng) for k in np.argsort(r)[-5:]]
        best_return, best = max(runs, key=lambda run: run[0])
        fresh = gym_return(best, args.starts, 100_000 + 1_000 * args.seed, squash)
        out[squash] = {
            "random_search_best": float(r.max()),
            "cem_bests": [run[0] for run in runs],
            "best_params": [float(x) for x in best],
            "best_return_search_starts": best_return,
            "best_return_fresh_starts_gymnasium": fresh,
        }
        print(
            f"{squash}: random search best {r.max():.1f}; CEM runs {[round(run[0], 1) for run in runs]}; "
            f"best W,b = {np.round(best, 2).tolist()} -> {best_return:.1f} on the search starts, "
            f"{fresh:.1f} on {args.starts} fresh gymnasium episodes",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    out["command"] = {"argv": f"python benchmarks/linear_policy_ceiling.py --starts {args.starts} --seed {args.seed}"}
    (RESULTS / f"linear_policy_ceiling_pendulum_s{args.seed}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
