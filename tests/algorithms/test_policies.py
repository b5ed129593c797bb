"""DeMoSACPolicy / DeMoTD3Policy: SB3's policies by default, LayerNorm critics on request."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest
import torch as th
from stable_baselines3 import SAC, TD3
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sb3_demo import DeMoSAC, DeMoTD3
from sb3_demo.algorithms.policies import DeMoSACPolicy, DeMoTD3Policy, LayerNormContinuousCritic

PAIRS = [(DeMoSACPolicy, SACPolicy), (DeMoTD3Policy, TD3Policy)]
ALGOS = [DeMoSAC, DeMoTD3]


def _algo(algo: type, **policy_kwargs: Any) -> Any:
    return algo(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        model="analytic",
        planner_kwargs=dict(horizon=3, num_samples=16, num_iterations=1),
        learning_starts=50,
        batch_size=32,
        policy_kwargs=dict(net_arch=[32, 32], **policy_kwargs),
        seed=0,
    )


@pytest.mark.parametrize(("ours", "sb3"), PAIRS)
def test_without_layer_norm_the_policy_is_sb3s_parameter_for_parameter(ours: type, sb3: type) -> None:
    env = gym.make("Pendulum-v1")
    args = (env.observation_space, env.action_space, lambda _: 1e-3)
    th.manual_seed(0)
    theirs = sb3(*args, net_arch=[32, 32]).state_dict()
    th.manual_seed(0)
    mine = ours(*args, net_arch=[32, 32]).state_dict()
    assert list(mine) == list(theirs)
    assert all(th.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("algo", ALGOS)
def test_layer_norm_follows_every_hidden_layer_of_critic_and_target_only(algo: type) -> None:
    model = _algo(algo, critic_layer_norm=True)
    for critic in (model.critic, model.critic_target):
        assert isinstance(critic, LayerNormContinuousCritic)
        for q_net in critic.q_networks:
            kinds = [type(m) for m in q_net]
            assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    assert not any(isinstance(m, nn.LayerNorm) for m in model.actor.modules())
    # the LayerNorm gains are trained, and the targets start as the critics
    optimised = {id(p) for group in model.critic.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for name, p in model.critic.named_parameters() if "qf0.1" in name)
    obs = th.randn(5, 3)
    act = th.rand(5, 1) * 2 - 1
    assert all(th.equal(a, b) for a, b in zip(model.critic(obs, act), model.critic_target(obs, act), strict=True))


@pytest.mark.parametrize("algo", ALGOS)
def test_layer_norm_critics_stay_bounded_far_outside_the_data(algo: type) -> None:
    """What the LayerNorm is for: an MLP critic's value grows with its input's scale, the LayerNorm critic's
    is bounded by its output layer's weights (each normalised feature is at most sqrt(width) in size)."""
    plain, normed = _algo(algo), _algo(algo, critic_layer_norm=True)
    obs = th.tensor([[1.0, 0.0, 1.0]])
    act = th.tensor([[0.5]])
    with th.no_grad():
        near = [th.cat(m.critic(obs, act)).abs().max() for m in (plain, normed)]
        far = [th.cat(m.critic(obs * 1e4, act)).abs().max() for m in (plain, normed)]
        out = normed.critic.q_networks[0][-1]
        bound = out.weight.abs().sum() * (32**0.5) * 2 + out.bias.abs()  # LayerNorm gain 1, bias 0 at init
    assert far[0] > 100 * near[0]
    assert far[1] <= bound


@pytest.mark.parametrize("algo", ALGOS)
def test_layer_norm_critics_learn_and_survive_save_load(algo: type, tmp_path: Any) -> None:
    model = _algo(algo, critic_layer_norm=True)
    gain = model.critic.q_networks[0][1].weight.detach().clone()
    model.learn(150)
    assert not th.equal(model.critic.q_networks[0][1].weight, gain)
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip")
    assert loaded.policy.critic_layer_norm is True
    obs = th.randn(4, 3)
    act = th.rand(4, 1) * 2 - 1
    with th.no_grad():
        assert all(th.equal(a, b) for a, b in zip(model.critic(obs, act), loaded.critic(obs, act), strict=True))


@pytest.mark.parametrize("algo", ALGOS)
def test_a_bad_layer_norm_setting_is_named(algo: type) -> None:
    with pytest.raises(TypeError, match="critic_layer_norm must be True or False, got 'yes'"):
        _algo(algo, critic_layer_norm="yes")


@pytest.mark.parametrize(("algo", "base", "method"), [(DeMoSAC, SAC, "from_sac"), (DeMoTD3, TD3, "from_td3")])
def test_starting_layer_norm_critics_from_a_plain_checkpoint_is_refused_before_loading(
    algo: type, base: type, method: str
) -> None:
    plain = base("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[32, 32]), seed=0)
    before = {k: v.clone() for k, v in plain.policy.state_dict().items()}
    with pytest.raises(ValueError, match="critic_layer_norm=True cannot start from a"):
        getattr(algo, method)(plain, model="analytic", policy_kwargs=dict(net_arch=[32, 32], critic_layer_norm=True))
    after = plain.policy.state_dict()
    assert all(th.equal(before[k], after[k]) for k in before)  # the source is untouched
    assert isinstance(getattr(algo, method)(plain, model="analytic"), algo)  # without the setting it starts
