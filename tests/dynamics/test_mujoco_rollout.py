"""MuJoCoRolloutDynamics against the simulator it wraps (``env.step``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_demo.dynamics.mujoco_rollout import SUPPORTED_ENVS, MuJoCoRolloutDynamics

# absolute tolerances: observation, reward (see the module docstring for why some are not exact)
TOLERANCES = {
    "InvertedPendulum-v5": (1e-9, 1e-9),
    "InvertedDoublePendulum-v5": (1e-9, 1e-3),  # tip site read at the RK4 integrator's last stage
    "Reacher-v5": (5e-3, 2e-3),  # fingertip kinematics likewise
    "Swimmer-v5": (1e-6, 1e-6),
    "HalfCheetah-v5": (1e-6, 1e-5),
    "Hopper-v5": (1e-6, 1e-5),
    "Walker2d-v5": (1e-6, 1e-5),
    "Ant-v5": (1e-6, None),  # qpos/qvel part only; contact forces and reward: test_ant_reward_close
}


def compare_with_env(env_id: str, steps: int, seed: int = 0, **env_kwargs) -> dict[str, np.ndarray]:
    """Step the env with random actions and the model from the env's state; collect both results."""
    env = gym.make(env_id, **env_kwargs)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    dyn = MuJoCoRolloutDynamics(env, nthread=2)
    rows: dict[str, list] = {
        k: []
        for k in (
            "obs",
            "obs_model",
            "state",
            "state_model",
            "reward",
            "reward_model",
            "terminated",
            "terminated_model",
        )
    }
    for _ in range(steps):
        state = dyn.state_from_env()
        rows["obs"].append(obs)
        rows["obs_model"].append(dyn.observe(state[None])[0].numpy())
        action = env.action_space.sample()
        next_state, reward, terminated = dyn(state[None], th.as_tensor(action, dtype=th.float64)[None])
        obs, env_reward, env_terminated, truncated, _ = env.step(action)
        rows["state"].append(dyn.state_from_env().numpy())
        rows["state_model"].append(next_state[0].numpy())
        rows["reward"].append(env_reward)
        rows["reward_model"].append(reward.item())
        rows["terminated"].append(env_terminated)
        rows["terminated_model"].append(bool(terminated.item()))
        if env_terminated or truncated:
            obs, _ = env.reset()
    dyn.close()
    return {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}


@pytest.mark.parametrize("env_id", SUPPORTED_ENVS)
def test_matches_env_step(env_id: str) -> None:
    out = compare_with_env(env_id, 120)
    obs_tol, reward_tol = TOLERANCES[env_id]
    np.testing.assert_allclose(out["state_model"], out["state"], atol=1e-6, rtol=0)
    obs_dim = 27 if env_id == "Ant-v5" else out["obs"].shape[1]
    np.testing.assert_allclose(out["obs_model"][:, :obs_dim], out["obs"][:, :obs_dim], atol=obs_tol, rtol=0)
    if reward_tol is not None:
        np.testing.assert_allclose(out["reward_model"], out["reward"], atol=reward_tol, rtol=0)
    np.testing.assert_array_equal(out["terminated_model"], out["terminated"])


@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Hopper-v5"])
def test_recordings_contain_terminations(env_id: str) -> None:
    # the termination comparison above is only meaningful if the env terminated in the recording
    out = compare_with_env(env_id, 120)
    assert out["terminated"].sum() >= 2


def test_ant_reward_close() -> None:
    # Ant's env reads the torso position and contact forces from the RK4 integrator's last stage; contact
    # forces are impulsive, so the contact cost (weight 5e-4, <= 0.039 per step) can differ on contact
    # steps. The rest of the reward is the model's.
    out = compare_with_env("Ant-v5", 150)
    error = np.abs(out["reward_model"] - out["reward"])
    assert error.mean() < 0.02, error.mean()
    assert error.max() < 0.15, error.max()
    assert np.corrcoef(out["reward_model"], out["reward"])[0, 1] > 0.99


def test_env_settings_and_frame_skip_are_honoured() -> None:
    out = compare_with_env(
        "Hopper-v5", 60, frame_skip=2, ctrl_cost_weight=0.5, healthy_reward=2.0, forward_reward_weight=3.0
    )
    np.testing.assert_allclose(out["state_model"], out["state"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["reward_model"], out["reward"], atol=1e-5, rtol=0)
    env = gym.make("Hopper-v5", frame_skip=2)
    assert MuJoCoRolloutDynamics(env, nthread=0).frame_skip == 2


def test_batch_equals_one_by_one_and_threads_agree() -> None:
    env = gym.make("HalfCheetah-v5")
    env.reset(seed=3)
    single = MuJoCoRolloutDynamics(env, nthread=0)
    pooled = MuJoCoRolloutDynamics(env, nthread=2)
    gen = th.Generator().manual_seed(0)
    state = single.state_from_env()
    states = state.repeat(16, 1)
    states[:, single._qvel_start :] += 0.3 * th.randn(16, single.nv, generator=gen, dtype=th.float64)
    actions = th.rand(16, 6, generator=gen, dtype=th.float64) * 2 - 1
    batch = pooled(states, actions)
    for i in range(16):
        one = single(states[i : i + 1], actions[i : i + 1])
        for got, expected in zip(batch, one):
            assert th.equal(got[i : i + 1], expected)
    # and the model is a pure function of its inputs: the env's own state is untouched
    assert th.equal(single.state_from_env(), state)


def test_dtype_device_and_shapes() -> None:
    env = gym.make("InvertedPendulum-v5")
    env.reset(seed=0)
    dyn = MuJoCoRolloutDynamics(env, nthread=0)
    assert (dyn.state_dim, dyn.observation_dim, dyn.action_dim) == (5, 4, 1)
    states = dyn.state_from_env()[None].float().repeat(3, 1)
    next_states, rewards, terminated = dyn(states, th.zeros(3, 1))
    assert next_states.dtype == th.float32 and rewards.dtype == th.float32
    assert next_states.shape == (3, 5) and rewards.shape == (3,) and terminated.dtype == th.bool
    assert dyn.observe(states).shape == (3, 4)
    with pytest.raises(ValueError, match=r"states must have shape \(N, 5\)"):
        dyn(states[:, :4], th.zeros(3, 1))
    with pytest.raises(ValueError, match=r"actions must have shape \(N, 1\)"):
        dyn(states, th.zeros(3, 2))
    with pytest.raises(ValueError, match="same batch size"):
        dyn(states, th.zeros(2, 1))
    with pytest.raises(TypeError, match="torch tensor"):
        dyn(states.numpy(), th.zeros(3, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nthread"):
        MuJoCoRolloutDynamics(env, nthread=-1)


def test_refuses_envs_without_mujoco_state() -> None:
    with pytest.raises(TypeError, match="no MuJoCo state"):
        MuJoCoRolloutDynamics(gym.make("Pendulum-v1"))
    from stable_baselines3.common.env_util import make_vec_env

    with pytest.raises(TypeError, match="VecEnv"):
        MuJoCoRolloutDynamics(make_vec_env("InvertedPendulum-v5", n_envs=1))


def test_unsupported_mujoco_env_needs_functions() -> None:
    env = gym.make("Pusher-v5")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="observation_fn, reward_fn and termination_fn"):
        MuJoCoRolloutDynamics(env)
    nq, nv = env.unwrapped.model.nq, env.unwrapped.model.nv
    dyn = MuJoCoRolloutDynamics(
        env,
        nthread=0,
        observation_fn=lambda s: s[:, 1 : 1 + nq + nv],  # full physics state: [time, qpos, qvel, ...]
        reward_fn=lambda s, a, s2: -(a**2).sum(dim=1),
        termination_fn=lambda s, a, s2: th.zeros(s.shape[0], dtype=th.bool),
    )
    state = dyn.state_from_env()[None]
    action = th.full((1, dyn.action_dim), 0.5, dtype=th.float64)
    next_state, reward, terminated = dyn(state, action)
    env.step(action[0].numpy())
    th.testing.assert_close(next_state[0], dyn.state_from_env(), atol=1e-6, rtol=0)
    assert reward.item() == pytest.approx(-0.25 * dyn.action_dim)
    assert not terminated.item()
    assert dyn.observation_dim == nq + nv
    th.testing.assert_close(dyn.observe(state)[0, :nq], dyn.qpos(state)[0])


# ---------------------------------------------------------------------------------------- planning


def plan_episode(env_id: str, steps: int, seed: int = 0, **planner_kwargs) -> tuple[float, int, bool]:
    from sb3_demo import DMDMPCPlanner

    env = gym.make(env_id)
    env.reset(seed=seed)
    dyn = MuJoCoRolloutDynamics(env, nthread=0)
    planner = DMDMPCPlanner(
        dyn,
        dyn.action_dim,
        action_low=env.action_space.low,
        action_high=env.action_space.high,
        dtype=th.float64,
        seed=seed,
        **planner_kwargs,
    )
    total, terminated = 0.0, False
    for t in range(steps):
        result = planner.plan(dyn.state_from_env()[None])
        _, reward, terminated, _, _ = env.step(result.action[0].numpy().astype(np.float32))
        total += float(reward)
        if terminated:
            return total, t + 1, True
    return total, steps, False


def upright_value(obs: th.Tensor) -> th.Tensor:
    """Quadratic terminal value of InvertedPendulum's ``[x, theta, xdot, thetadot]`` (no learning)."""
    weights = th.tensor([5.0, 20.0, 0.5, 0.5], dtype=obs.dtype)
    return -(weights * obs**2).sum(dim=1)


def test_planner_balances_inverted_pendulum() -> None:
    # benchmarks/planner_mujoco.py runs the same for 1000 steps; a zero action lets the pole fall in ~30 steps
    _, length, terminated = plan_episode(
        "InvertedPendulum-v5",
        100,
        horizon=10,
        num_samples=30,
        num_iterations=2,
        init_std=0.3,
        temperature=0.1,
        terminal_value=upright_value,
    )
    assert not terminated and length == 100
    env = gym.make("InvertedPendulum-v5")
    env.reset(seed=0)
    fell = [env.step(np.zeros(1, dtype=np.float32))[2] for _ in range(100)]
    assert any(fell)  # without the planner the pole falls within the same 100 steps


def test_planner_runs_half_cheetah_forward() -> None:
    planned, _, _ = plan_episode("HalfCheetah-v5", 15, horizon=5, num_samples=20, num_iterations=1)
    env = gym.make("HalfCheetah-v5")
    env.reset(seed=0)
    passive = sum(float(env.step(np.zeros(6, dtype=np.float32))[1]) for _ in range(15))
    assert planned > passive + 1.0, (planned, passive)
