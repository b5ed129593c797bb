"""How far a saved agent's critic is from the truth on its own trajectories.

The bare actor runs deterministic episodes (``--stochastic``: sampled actions, the policy SAC's critic
evaluates); at each visited state the critics' values of the executed action
(the twins' min and mean) are set against the discounted return that followed (gamma of the agent). States of
the last 300 steps of an episode the time limit ends are left out (their return is cut short: gamma**300 < 0.05);
an episode the env ends (a fall) keeps every state.
SAC's soft value also counts the entropy bonus of the stochastic policy; ``entropy_bonus`` is its size,
``ent_coef * mean(-log pi) * gamma / (1 - gamma)`` at the visited states, so a bias well above it is the critic's.
On HalfCheetah, ``flipped_share`` is the share of steps the cheetah spends on its back (body angle, observation 1,
beyond 90 degrees): the known local optimum of running on its back.

    python benchmarks/critic_bias.py models/HalfCheetah-v5_..._seed1.zip --env HalfCheetah-v5 --seed 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

from sb3_demo import DeMoSAC, DeMoTD3

RESULTS = Path(__file__).parent / "results"
CUT = 300  # steps at an episode's end whose discounted return the time limit shortens


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """The discounted return from each step to the episode's end."""
    returns = np.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def episode(model: Any, env: gym.Env, seed: int, deterministic: bool = True) -> dict[str, np.ndarray]:
    """One episode of the bare actor: rewards, the critics' values, -log pi at each state."""
    obs, _ = env.reset(seed=seed)
    rewards, q_values, neg_log_probs, angles = [], [], [], []
    done = False
    while not done:
        action, _ = model.policy.predict(obs, deterministic=deterministic)  # the bare actor, not the planner
        with th.no_grad():
            obs_t = th.as_tensor(obs, dtype=th.float32, device=model.device)[None]
            act_t = th.as_tensor(model.policy.scale_action(action), dtype=th.float32, device=model.device)[None]
            q_values.append(th.cat(model.critic(obs_t, act_t), dim=1)[0].cpu().numpy())
            if isinstance(model, DeMoSAC):
                _, log_prob = model.actor.action_log_prob(obs_t)
                neg_log_probs.append(-float(log_prob))
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        angles.append(float(obs[1]))
        done = terminated or truncated
    return {
        "truncated": np.array(not terminated),
        "rewards": np.array(rewards),
        "q": np.array(q_values),
        "neg_log_prob": np.array(neg_log_probs),
        "angle": np.array(angles),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a saved DeMoSAC or DeMoTD3 (.zip)")
    parser.add_argument("--env", required=True)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument(
        "--stochastic", action="store_true", help="the actor samples its actions (the policy the critic evaluates)"
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    algo = DeMoTD3 if "td3" in Path(args.model).name.lower() else DeMoSAC
    model = algo.load(args.model, device="cpu")
    env = gym.make(args.env)
    rows = []
    for i in range(args.episodes):
        ep = episode(model, env, args.seed + i, deterministic=not args.stochastic)
        # an episode the env ended (a fall) has its whole return; the time limit cuts the last steps' returns short
        n = max(len(ep["rewards"]) - CUT, 1) if ep["truncated"] else len(ep["rewards"])
        returns = discounted_returns(ep["rewards"], model.gamma)[:n]
        q = ep["q"][:n]
        row = {
            "episode_return": float(ep["rewards"].sum()),
            "episode_length": len(ep["rewards"]),
            "q_min": float(q.min(axis=1).mean()),
            "q_mean": float(q.mean()),
            "discounted_return": float(returns.mean()),
            "bias_q_min": float((q.min(axis=1) - returns).mean()),
        }
        if len(ep["neg_log_prob"]):
            ent_coef = float(th.exp(model.log_ent_coef.detach())) if model.log_ent_coef is not None else 0.0
            row["entropy_bonus"] = ent_coef * float(ep["neg_log_prob"][:n].mean()) * model.gamma / (1 - model.gamma)
        if args.env.startswith("HalfCheetah"):
            row["flipped_share"] = float((np.abs(ep["angle"]) > np.pi / 2).mean())
        rows.append(row)
        print(json.dumps({k: round(v, 2) for k, v in row.items()}))
    out = RESULTS / f"critic_bias_{args.env}{args.tag}.json"
    out.write_text(
        json.dumps(
            {
                "model": Path(args.model).name,
                "env": args.env,
                "seed": args.seed,
                "stochastic": args.stochastic,
                "episodes": rows,
            }
        )
    )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
