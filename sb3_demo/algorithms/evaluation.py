"""Evaluate a DeMo algorithm twice during training: with the planner and with the bare actor."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy


class DeMoEvalCallback(EvalCallback):
    """SB3's :class:`~stable_baselines3.common.callbacks.EvalCallback` that also evaluates the bare actor.

    Every ``eval_freq`` calls it runs the same number of episodes with ``predict_with_planner=False`` and
    then the usual evaluation, i.e. ``model.predict`` which plans (logged as ``eval/mean_reward``; best
    model saving and ``callback_on_new_best`` work as usual). The actor's results are logged as
    ``eval/actor_mean_reward`` and ``eval/actor_std_reward``, in the same dump; its episode returns of
    every evaluation are kept in :attr:`actor_results`, the planner's mean return minus the actor's in
    :attr:`planner_gains`.

    :param eval_env: the evaluation environment (as for ``EvalCallback``)
    :param kwargs: every other argument of ``EvalCallback`` (``eval_freq``, ``n_eval_episodes``, ...)
    """

    def __init__(self, eval_env: Any, **kwargs: Any) -> None:
        super().__init__(eval_env, **kwargs)
        self.actor_results: list[list[float]] = []
        self.planner_gains: list[float] = []

    def _init_callback(self) -> None:
        super()._init_callback()
        if not hasattr(self.model, "predict_with_planner"):
            raise TypeError(
                f"DeMoEvalCallback needs a DeMo algorithm (DeMoSAC, DeMoTD3), got {type(self.model).__name__}; "
                "use stable_baselines3's EvalCallback for other algorithms"
            )

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            # the bare actor first, so its keys go out with the planner's in EvalCallback's dump
            model: Any = self.model
            saved = model.predict_with_planner
            model.predict_with_planner = False
            try:
                episode_returns, _ = evaluate_policy(
                    model,
                    self.eval_env,
                    n_eval_episodes=self.n_eval_episodes,
                    deterministic=self.deterministic,
                    return_episode_rewards=True,
                    warn=self.warn,
                )
            finally:
                model.predict_with_planner = saved
            returns = np.atleast_1d(np.asarray(episode_returns, dtype=np.float64))  # a list per episode here
            self.actor_results.append([float(r) for r in returns])
            actor_mean = float(np.mean(returns))
            self.logger.record("eval/actor_mean_reward", actor_mean)
            self.logger.record("eval/actor_std_reward", float(np.std(returns)))
            if self.verbose >= 1:
                print(f"Eval bare actor: episode_reward={actor_mean:.2f} +/- {np.std(returns):.2f}")
            continue_training = super()._on_step()  # plans: eval/mean_reward, best model, dump
            self.planner_gains.append(float(self.last_mean_reward) - actor_mean)
            return continue_training
        return super()._on_step()
