"""Probabilistic ensemble dynamics model (PETS, Chua et al. 2018) trained from an SB3 replay buffer.

Each of ``E`` members is an MLP (Swish activations) that maps a normalised ``[state, action]`` to the mean
and log-variance of a diagonal Gaussian over the normalised ``[state delta, reward]`` (the reward output
only when no ``reward_fn`` is given). All members are evaluated in one batched matrix product per
layer: a layer holds a ``(E, in, out)`` weight tensor and computes ``th.baddbmm(bias, x, weight)`` on
``x`` of shape ``(E, batch, in)``.

Training (:meth:`EnsembleDynamics.fit`): inputs and targets are standardised with statistics of the
data, a random hold-out set is put aside, each member trains on its own bootstrap of the rest with the
Gaussian negative log-likelihood, weight decay and a penalty that keeps the learnable log-variance bounds
tight; training stops when no member improved its hold-out MSE by more than 1 % for ``patience``
epochs (and at least ``patience_steps`` gradient steps), every member keeps its best weights, and the
``num_elites`` members with the lowest hold-out MSE become the elites. Fits continue from the current
weights; with ``reinit_growth`` a fit starts from fresh weights whenever the data has grown by that factor
since the last fresh start (a warm-started ensemble whose first fit saw only a few dozen transitions can stay
stuck far from the data).

Prediction (``model(states, actions)``) uses trajectory sampling (TS-inf): row ``i`` of a batch always
goes through elite ``i % num_elites``, so a particle keeps its member along a planned trajectory, and
the next state is drawn from that member's Gaussian (or its mean when ``deterministic``). Each member
computes only its own rows (grouped by member, one batched product per layer), the log-variance only
when sampling; the noise is drawn in row order, so a row's draw does not depend on how rows are grouped.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from torch import nn

from sb3_demo.checks import check_int, is_int

RewardFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]
TerminationFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]
ArrayLike = np.ndarray | th.Tensor

# initial soft bounds of the predicted log-variance (normalised target units; learnable, as in PETS)
INIT_MAX_LOGVAR, INIT_MIN_LOGVAR = 0.5, -10.0


class EnsembleLinear(nn.Module):
    """``E`` independent affine layers evaluated with one batched matrix product.

    :param num_members: E
    :param in_features: input size
    :param out_features: output size
    """

    def __init__(
        self, num_members: int, in_features: int, out_features: int, generator: th.Generator | None = None
    ) -> None:
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(th.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(th.empty(num_members, 1, out_features))
        self.reset_parameters(generator)

    @th.no_grad()
    def reset_parameters(self, generator: th.Generator | None = None) -> None:
        """Truncated-normal weights with std 1 / (2 sqrt(in)) (as in PETS), cut at 2 std; zero biases.

        :param generator: a CPU generator for the draw (the weights are drawn on the CPU, then copied)
        """
        std = 1.0 / (2.0 * math.sqrt(self.in_features))
        weight = th.empty(self.weight.shape)
        nn.init.trunc_normal_(weight, std=std, a=-2.0 * std, b=2.0 * std, generator=generator)
        self.weight.copy_(weight)
        self.bias.zero_()

    def forward(self, x: th.Tensor, members: th.Tensor | int | None = None) -> th.Tensor:
        """
        :param x: (E', B, in)
        :param members: None for all E members, an int ``k`` for the first ``k`` (a view, no copy), or a
            (E',) tensor of member indices
        :return: (E', B, out)
        """
        if members is None:
            return th.baddbmm(self.bias, x, self.weight)
        if isinstance(members, int):
            return th.baddbmm(self.bias[:members], x, self.weight[:members])
        return th.baddbmm(self.bias.index_select(0, members), x, self.weight.index_select(0, members))

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in={self.in_features}, out={self.out_features}"


def _as_tensor(name: str, value: ArrayLike, dtype: th.dtype, device: th.device) -> th.Tensor:
    if not isinstance(value, np.ndarray | th.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    return th.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else value).to(device=device, dtype=dtype)


class EnsembleDynamics(nn.Module):
    """Probabilistic ensemble of MLPs predicting ``[next_state - state, reward]``.

    :param observation_dim: S
    :param action_dim: A
    :param num_members: E, members in the ensemble
    :param num_elites: members used for prediction (best hold-out MSE), 1 <= num_elites <= E
    :param hidden_sizes: hidden layer widths (Swish activations)
    :param learning_rate: Adam learning rate
    :param weight_decay: L2 penalty ``decay / 2 * |W|^2`` per layer: one float for every layer, or one per
        layer (``len(hidden_sizes) + 1`` values, e.g. PETS's ``(2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)``)
    :param holdout_fraction: fraction of the data held out for early stopping and elite selection, in [0, 1)
    :param reward_fn: ``reward_fn(obs, action, next_obs) -> (N,)``; None to learn the reward
    :param termination_fn: ``termination_fn(obs, action, next_obs) -> (N,) bool``; None: never terminates
    :param deterministic: predict the members' means instead of sampling (also a keyword of ``forward``)
    :param disagreement_penalty: >= 0; subtract ``penalty * d`` from each predicted reward, with ``d`` the
        elites' disagreement on that transition (the norm of the std across elites of their mean
        predictions, in standardised target units): a planner is then kept from exploiting states where
        the members disagree (MOPO-style pessimism). Every elite runs on every row (k times the FLOPs, the
        same number of calls). 0: off
    :param improvement_threshold: relative hold-out MSE improvement that resets the patience counter
    :param device: torch device
    :param seed: seed of the model's initialisation, its fits' draws (data split, bootstrap, batch order)
        and its own sampling noise (each a stream of its own)
    """

    # forward() takes the caller's generator for its sampling noise (see sb3_demo.dynamics.base)
    takes_generator = True

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        num_members: int = 7,
        num_elites: int = 5,
        hidden_sizes: Sequence[int] = (200, 200, 200, 200),
        learning_rate: float = 1e-3,
        weight_decay: float | Sequence[float] = 5e-5,
        holdout_fraction: float = 0.2,
        reward_fn: RewardFn | None = None,
        termination_fn: TerminationFn | None = None,
        deterministic: bool = False,
        disagreement_penalty: float = 0.0,
        improvement_threshold: float = 0.01,
        device: th.device | str = "cpu",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("observation_dim", observation_dim),
            ("action_dim", action_dim),
            ("num_members", num_members),
            ("num_elites", num_elites),
        ):
            check_int(name, value, 1)
        if num_elites > num_members:
            raise ValueError(f"num_elites must be <= num_members ({num_members}), got {num_elites}")
        hidden_sizes = tuple(hidden_sizes)
        if len(hidden_sizes) == 0 or any(not is_int(h) or h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be a non-empty sequence of ints >= 1, got {hidden_sizes}")
        penalty_ok = isinstance(disagreement_penalty, int | float) and not isinstance(disagreement_penalty, bool)
        if not (penalty_ok and math.isfinite(disagreement_penalty) and disagreement_penalty >= 0):
            raise ValueError(f"disagreement_penalty must be a finite number >= 0, got {disagreement_penalty!r}")
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        if not learning_rate > 0.0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        decays = (
            [float(weight_decay)] * (len(hidden_sizes) + 1)
            if isinstance(weight_decay, int | float)
            else [float(d) for d in weight_decay]
        )
        if len(decays) != len(hidden_sizes) + 1 or any(d < 0 for d in decays):
            raise ValueError(
                "weight_decay must be a float >= 0 or one value >= 0 per layer "
                f"({len(hidden_sizes) + 1} for hidden_sizes={hidden_sizes}), got {weight_decay}"
            )
        for name, fn in (("reward_fn", reward_fn), ("termination_fn", termination_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a callable(obs, action, next_obs) or None, got {type(fn).__name__}")

        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.num_members = num_members
        self.num_elites = num_elites
        self.hidden_sizes = hidden_sizes
        self.learning_rate = float(learning_rate)
        self.weight_decays = decays
        self.holdout_fraction = float(holdout_fraction)
        self.reward_fn = reward_fn
        self.termination_fn = termination_fn
        self.deterministic = deterministic
        self.disagreement_penalty = float(disagreement_penalty)
        self.improvement_threshold = float(improvement_threshold)
        self.learn_reward = reward_fn is None
        self.input_dim = observation_dim + action_dim
        self.output_dim = observation_dim + int(self.learn_reward)

        if seed is None:
            seed = int(th.randint(0, 2**62, (1,)).item())
        init_generator = th.Generator().manual_seed(seed)
        sizes = [self.input_dim, *hidden_sizes]
        self.layers = nn.ModuleList(
            [
                EnsembleLinear(num_members, n_in, n_out, generator=init_generator)
                for n_in, n_out in itertools.pairwise(sizes)
            ]
        )
        self.output_layer = EnsembleLinear(num_members, sizes[-1], 2 * self.output_dim, generator=init_generator)
        # learnable soft bounds of the log-variance (normalised target units)
        self.max_logvar = nn.Parameter(th.full((1, self.output_dim), INIT_MAX_LOGVAR))
        self.min_logvar = nn.Parameter(th.full((1, self.output_dim), INIT_MIN_LOGVAR))

        self.register_buffer("input_mean", th.zeros(self.input_dim))
        self.register_buffer("input_std", th.ones(self.input_dim))
        self.register_buffer("target_mean", th.zeros(self.output_dim))
        self.register_buffer("target_std", th.ones(self.output_dim))
        self.register_buffer("elite_indices", th.arange(num_elites, dtype=th.long))
        self.register_buffer("fitted", th.zeros((), dtype=th.bool))
        # transitions of the fit that last started from fresh weights (0: none yet), see ``fit(reinit_growth=)``;
        # a buffer, so that it is saved with the weights (``load`` then ``learn`` goes on with the same schedule)
        self.register_buffer("fresh_fit_size", th.zeros((), dtype=th.long))
        self.input_mean: th.Tensor
        self.input_std: th.Tensor
        self.target_mean: th.Tensor
        self.target_std: th.Tensor
        self.elite_indices: th.Tensor
        self.fitted: th.Tensor
        self.fresh_fit_size: th.Tensor

        self.to(device)
        # two streams: sampling (for callers that pass no generator of their own) and fitting, so that no
        # prediction ever moves what a fit draws
        self.generator = th.Generator(device=self.device)
        self.generator.manual_seed(seed + 1)
        self.fit_generator = th.Generator(device=self.device)
        self.fit_generator.manual_seed(seed + 2)
        self.optimizer: th.optim.Optimizer | None = None

    # ------------------------------------------------------------------ basics

    @property
    def device(self) -> th.device:
        return self.max_logvar.device

    @property
    def state_dim(self) -> int:
        """The planner's state is the observation: S."""
        return self.observation_dim

    @property
    def can_terminate(self) -> bool:
        """Only a ``termination_fn`` can end a rollout (the planner skips termination bookkeeping otherwise)."""
        return self.termination_fn is not None

    def _build_optimizer(self) -> th.optim.Optimizer:
        return th.optim.Adam(self.parameters(), lr=self.learning_rate)

    def _decay_penalty(self) -> th.Tensor:
        layers = [*self.layers, self.output_layer]
        return sum(
            (0.5 * decay * (layer.weight**2).sum() for decay, layer in zip(self.weight_decays, layers)),
            th.zeros((), device=self.device),
        )

    def _core(self, x: th.Tensor, members: th.Tensor | int | None = None) -> tuple[th.Tensor, th.Tensor]:
        """Normalised inputs (E', B, in) -> normalised target mean and bounded log-variance (E', B, out)."""
        out = self._network(x, members)
        return out[..., : self.output_dim], self._bounded_logvar(out[..., self.output_dim :])

    def _network(self, x: th.Tensor, members: th.Tensor | int | None = None) -> th.Tensor:
        """Normalised inputs (E', B, in) -> the output layer (E', B, 2 out): the mean, then the raw log-variance."""
        for layer in self.layers:
            x = layer(x, members)
            # in place when no graph is recorded (planning): saves an allocation per layer
            x = nn.functional.silu(x, inplace=not (th.is_grad_enabled() and x.requires_grad))
        return self.output_layer(x, members)

    def _bounded_logvar(self, logvar: th.Tensor) -> th.Tensor:
        """The raw log-variance softly bounded by the learnable ``[min_logvar, max_logvar]``."""
        logvar = self.max_logvar - nn.functional.softplus(self.max_logvar - logvar)
        return self.min_logvar + nn.functional.softplus(logvar - self.min_logvar)

    def _device_generator(self, name: str = "generator") -> th.Generator:
        """The generator ``name`` (``"generator"`` or ``"fit_generator"``), re-created (and seeded from the old
        one) after ``.to(device)``."""
        old: th.Generator = getattr(self, name)
        if old.device != self.device:
            seed = int(th.randint(0, 2**62, (1,), generator=old, device=old.device).item())
            setattr(self, name, th.Generator(device=self.device).manual_seed(seed))
        return getattr(self, name)

    def _sample(self, mean: th.Tensor, logvar: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        """A draw from N(mean, exp(logvar)) (noise in the shape of ``mean``) with ``generator`` (None: the
        model's sampling generator)."""
        if generator is None:
            generator = self._device_generator()
        noise = th.randn(mean.shape, generator=generator, device=self.device, dtype=mean.dtype)
        return mean + th.exp(0.5 * logvar) * noise

    def _elite_members(self, count: int | None = None) -> th.Tensor | int:
        """The first ``count`` elites (default: all) as ``_core``'s ``members``: an int (a prefix, no weight
        copy) when they come first."""
        elites = self.elite_indices if count is None else self.elite_indices[:count]
        k = elites.shape[0]
        if bool((elites == th.arange(k, device=elites.device)).all()):
            return k
        return elites

    def _own_elite_outputs(self, x: th.Tensor) -> th.Tensor:
        """Each row through its own elite only (row ``i`` -> elite ``i % num_elites``): the network's output
        layer (N, 2 out) in row order.

        The rows are grouped by member, ``(members in use, rows per member, in)``, so that every member
        computes only its own rows in one batched product; with fewer rows than elites only the first
        ``N`` members run, otherwise the last group is padded to full size (fewer than ``num_elites`` rows).
        """
        n = x.shape[0]
        used = min(n, self.num_elites)
        pad = (-n) % used
        if pad:
            x = th.cat([x, x.new_zeros(pad, self.input_dim)])
        # row i -> member i % used: (n/used, used, in) -> (used, n/used, in)
        grouped = x.reshape(-1, used, self.input_dim).transpose(0, 1)
        out = self._network(grouped, self._elite_members(used))
        return out.transpose(0, 1).reshape(-1, out.shape[-1])[:n]

    def _normalize_inputs(self, states: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return (th.cat([states, actions], dim=-1) - self.input_mean) / self.input_std

    def _check_inputs(self, states: Any, actions: Any) -> None:
        for name, value, dim in (
            ("states", states, self.observation_dim),
            ("actions", actions, self.action_dim),
        ):
            if not isinstance(value, th.Tensor):
                raise TypeError(f"{name} must be a torch tensor of shape (N, {dim}), got {type(value).__name__}")
            if value.dim() != 2 or value.shape[1] != dim:
                raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(value.shape)}")
        if states.shape[0] != actions.shape[0]:
            raise ValueError(
                f"states and actions must have the same batch size, got {states.shape[0]} and {actions.shape[0]}"
            )

    # ------------------------------------------------------------------ prediction

    def forward(
        self,
        states: th.Tensor,
        actions: th.Tensor,
        deterministic: bool | None = None,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """One step of trajectory-sampling propagation through the elites.

        :param states: (N, S)
        :param actions: (N, A) in environment units
        :param deterministic: use the members' means (default: the ``deterministic`` attribute)
        :param generator: the caller's generator for the sampling noise (on the model's device), e.g. a
            planner's own; None: the model's sampling generator
        :return: next_states (N, S), rewards (N,), terminated (N,) bool, in the dtype of ``states``
        """
        self._check_inputs(states, actions)
        deterministic = self.deterministic if deterministic is None else deterministic
        n = states.shape[0]
        k = self.num_elites
        dtype = self.max_logvar.dtype
        s = states.to(device=self.device, dtype=dtype)
        a = actions.to(device=self.device, dtype=dtype)
        x = self._normalize_inputs(s, a)
        disagreement: th.Tensor | None = None
        if self.disagreement_penalty > 0.0:
            # every elite on every row: (k, n, in); row i still follows elite i % k
            mean_all, logvar_all = self._core(x.unsqueeze(0).expand(k, n, self.input_dim), self._elite_members())
            disagreement = mean_all.std(dim=0, unbiased=False).norm(dim=-1)  # (n,), 0 for a single elite
            own = th.arange(n, device=self.device)
            mean, logvar = mean_all[own % k, own], logvar_all[own % k, own]  # (n, out)
            if not deterministic:
                mean = self._sample(mean, logvar, generator)
        else:
            raw = self._own_elite_outputs(x)
            mean = raw[:, : self.output_dim]
            if not deterministic:
                mean = self._sample(mean, self._bounded_logvar(raw[:, self.output_dim :]), generator)
        out = th.addcmul(self.target_mean, mean, self.target_std)
        next_states = s + out[:, : self.observation_dim]
        if self.reward_fn is None:
            rewards = out[:, self.observation_dim]
        else:
            rewards = self.reward_fn(s, a, next_states).reshape(n)
        if disagreement is not None:
            rewards = rewards - self.disagreement_penalty * disagreement
        if self.termination_fn is None:
            terminated = th.zeros(n, dtype=th.bool, device=self.device)
        else:
            terminated = self.termination_fn(s, a, next_states).reshape(n).bool()
        out_dtype = states.dtype if states.is_floating_point() else dtype
        return next_states.to(out_dtype), rewards.to(out_dtype), terminated

    def predict_distribution(
        self, states: th.Tensor, actions: th.Tensor, members: str = "elites"
    ) -> tuple[th.Tensor, th.Tensor]:
        """Every member's Gaussian over ``[next_state - state, reward]`` in environment units.

        :param states: (N, S)
        :param actions: (N, A) in environment units
        :param members: ``"elites"`` or ``"all"``
        :return: mean and variance, each (E', N, D) with E' = num_elites or num_members, D = S (+ 1)
        """
        self._check_inputs(states, actions)
        if members not in ("elites", "all"):
            raise ValueError(f"members must be 'elites' or 'all', got {members!r}")
        dtype = self.max_logvar.dtype
        x = self._normalize_inputs(states.to(self.device, dtype), actions.to(self.device, dtype))
        count = self.num_elites if members == "elites" else self.num_members
        x = x.unsqueeze(0).expand(count, -1, -1)
        mean, logvar = self._core(x, self._elite_members() if members == "elites" else None)
        return mean * self.target_std + self.target_mean, th.exp(logvar) * self.target_std**2

    # ------------------------------------------------------------------ training

    def fit(
        self,
        observations: ArrayLike,
        actions: ArrayLike,
        next_observations: ArrayLike,
        rewards: ArrayLike,
        terminations: ArrayLike | None = None,
        *,
        max_epochs: int | None = None,
        batch_size: int = 256,
        patience: int = 5,
        patience_steps: int = 0,
        max_grad_steps: int | None = None,
        reinit_growth: float | None = None,
    ) -> dict[str, float]:
        """Train every member on a bootstrap of the data, with hold-out early stopping and elite selection.

        Training continues from the current weights (call it again as the data grows), unless
        ``reinit_growth`` asks for fresh ones. The normalisation statistics are re-fitted on all the data at
        each call, or, with ``reinit_growth``, at each fresh start only (the warm fits in between keep them).

        :param observations: (N, S)
        :param actions: (N, A) in environment units
        :param next_observations: (N, S)
        :param rewards: (N,) (used only when the reward is learned)
        :param terminations: (N,) accepted for symmetry with the buffer; the ensemble does not learn
            terminations (give ``termination_fn``)
        :param max_epochs: cap on epochs (None: until early stopping)
        :param batch_size: minibatch size per member
        :param patience: epochs without a > ``improvement_threshold`` hold-out improvement before stopping
        :param patience_steps: stop only once at least this many gradient steps have also passed without an
            improvement (an epoch of a few hundred transitions is one or two gradient steps, too few for a
            warm-started model to show progress); 0: epochs only
        :param max_grad_steps: cap on gradient steps (None: no cap)
        :param reinit_growth: > 1, or None; start this fit from freshly initialised weights (and a new
            optimiser) when there is no fresh start yet or the number of transitions is at least
            ``reinit_growth`` times that of the last fresh start (2.0: at about 2, 4, 8, ... times the first
            fit's data, so the fresh fits cost at most about twice the last one). None: always warm-start
        :return: ``train_loss`` (last epoch's mean NLL per member), ``holdout_loss`` and ``holdout_mse``
            (elites' mean NLL and MSE on the hold-out set, in standardised target units, i.e. each target
            dimension divided by its standard deviation), ``num_elites``, ``epochs``, ``grad_steps``,
            ``num_train``, ``num_holdout``, ``reinitialized`` (1.0 when this fit started from fresh weights)
        """
        _check_fit_settings(batch_size, patience, patience_steps, max_epochs, max_grad_steps, reinit_growth)
        inputs, targets = self._training_data(observations, actions, next_observations, rewards, terminations)
        reinitialize = self._fresh_start(inputs, targets, reinit_growth)
        x_all = (inputs - self.input_mean) / self.input_std
        y_all = (targets - self.target_mean) / self.target_std
        generator = self._device_generator("fit_generator")
        split = self._split(x_all.shape[0], generator)
        x_val, y_val = x_all[split.validation], y_all[split.validation]
        if self.optimizer is None:
            self.optimizer = self._build_optimizer()
        self.train()
        progress = self._train(
            x_all,
            y_all,
            x_val,
            y_val,
            split.bootstrap,
            generator,
            batch_size=batch_size,
            patience=patience,
            patience_steps=patience_steps,
            max_epochs=max_epochs,
            max_grad_steps=max_grad_steps,
        )
        nll_val, mse_val = self._select_elites(x_val, y_val)
        return {
            "train_loss": progress.train_loss,
            "holdout_loss": float(nll_val[self.elite_indices].mean()),
            "holdout_mse": float(mse_val[self.elite_indices].mean()),
            "num_elites": float(self.num_elites),
            "epochs": float(progress.epochs),
            "grad_steps": float(progress.grad_steps),
            "num_train": float(split.num_train),
            "num_holdout": float(split.num_holdout),
            "reinitialized": float(reinitialize),
        }

    def _training_data(
        self,
        observations: ArrayLike,
        actions: ArrayLike,
        next_observations: ArrayLike,
        rewards: ArrayLike,
        terminations: ArrayLike | None,
    ) -> tuple[th.Tensor, th.Tensor]:
        """Checked tensors -> the networks' unnormalised inputs ``(obs, action)`` (N, S + A) and targets
        ``(next_obs - obs[, reward])``, without the non-finite transitions (a warning counts them)."""
        dtype, device = self.max_logvar.dtype, self.device
        obs = _as_tensor("observations", observations, dtype, device)
        act = _as_tensor("actions", actions, dtype, device)
        next_obs = _as_tensor("next_observations", next_observations, dtype, device)
        rew = _as_tensor("rewards", rewards, dtype, device)
        n = obs.shape[0] if obs.dim() >= 1 else 0
        if obs.dim() != 2 or obs.shape[1] != self.observation_dim:
            raise ValueError(f"observations must have shape (N, {self.observation_dim}), got {tuple(obs.shape)}")
        if act.dim() == 1 and self.action_dim == 1:
            act = act[:, None]
        if act.shape != (n, self.action_dim):
            raise ValueError(f"actions must have shape ({n}, {self.action_dim}), got {tuple(act.shape)}")
        if next_obs.shape != obs.shape:
            raise ValueError(f"next_observations must have shape {tuple(obs.shape)}, got {tuple(next_obs.shape)}")
        if rew.numel() != n:
            raise ValueError(f"rewards must have shape ({n},), got {tuple(rew.shape)}")
        rew = rew.reshape(n, 1)
        if terminations is not None and np.asarray(terminations).size != n:
            raise ValueError(f"terminations must have shape ({n},), got {np.asarray(terminations).shape}")

        inputs = th.cat([obs, act], dim=1)
        targets = next_obs - obs
        if self.learn_reward:
            targets = th.cat([targets, rew], dim=1)
        finite = th.isfinite(inputs).all(dim=1) & th.isfinite(targets).all(dim=1)
        if not bool(finite.all()):
            dropped = int((~finite).sum())
            warnings.warn(f"EnsembleDynamics.fit: dropping {dropped} non-finite transitions", stacklevel=3)
            inputs, targets = inputs[finite], targets[finite]
        if inputs.shape[0] < 2:
            raise ValueError(f"EnsembleDynamics.fit needs at least 2 finite transitions, got {inputs.shape[0]}")
        return inputs, targets

    def _fresh_start(self, inputs: th.Tensor, targets: th.Tensor, reinit_growth: float | None) -> bool:
        """Re-initialise the weights when ``reinit_growth`` asks for it, and re-fit the normalisation
        statistics: at every fit without fresh starts, at fresh starts only with them (re-fitting them under
        warm weights would shift every input and output of the trained networks).

        :return: whether this fit starts from fresh weights
        """
        n = inputs.shape[0]
        last_fresh = int(self.fresh_fit_size)
        reinitialize = reinit_growth is not None and (last_fresh == 0 or n >= reinit_growth * last_fresh)
        if reinitialize:
            self.reinitialize()
            self.fresh_fit_size.fill_(n)
        if reinit_growth is None or reinitialize:
            self.input_mean.copy_(inputs.mean(dim=0))
            self.input_std.copy_(_safe_std(inputs))
            self.target_mean.copy_(targets.mean(dim=0))
            self.target_std.copy_(_safe_std(targets))
        return reinitialize

    def _split(self, n: int, generator: th.Generator) -> _Split:
        """A hold-out set and a bootstrap of the rest per member; validation falls back to the training
        data when there is no hold-out set."""
        perm = th.randperm(n, generator=generator, device=self.device)
        n_hold = int(n * self.holdout_fraction)
        hold_idx, train_idx = perm[:n_hold], perm[n_hold:]
        n_train = train_idx.shape[0]
        boot = train_idx[th.randint(n_train, (self.num_members, n_train), generator=generator, device=self.device)]
        return _Split(
            validation=hold_idx if n_hold > 0 else train_idx, bootstrap=boot, num_train=n_train, num_holdout=n_hold
        )

    def _train(
        self,
        x_all: th.Tensor,
        y_all: th.Tensor,
        x_val: th.Tensor,
        y_val: th.Tensor,
        boot: th.Tensor,
        generator: th.Generator,
        batch_size: int,
        patience: int,
        patience_steps: int,
        max_epochs: int | None,
        max_grad_steps: int | None,
    ) -> _Progress:
        """Epochs of minibatch NLL steps on each member's bootstrap until early stopping or a cap; each
        member ends with its weights of best hold-out MSE."""
        assert self.optimizer is not None
        e, n_train = boot.shape
        best_mse = self._evaluate(x_val, y_val)[1]
        best_state = {k: v.detach().clone() for k, v in self._member_params().items()}
        progress = _Progress()
        epochs_since_improvement = 0
        last_improvement_step = 0
        while True:
            order = th.argsort(th.rand(e, n_train, generator=generator, device=self.device), dim=1)
            shuffled = th.gather(boot, 1, order)
            epoch_losses = []
            for start in range(0, n_train, batch_size):
                idx = shuffled[:, start : start + batch_size]  # (E, b)
                mean, logvar = self._core(x_all[idx])
                nll = (((mean - y_all[idx]) ** 2) * th.exp(-logvar) + logvar).mean(dim=(1, 2))  # (E,)
                bound_penalty = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
                loss = nll.sum() + bound_penalty + self._decay_penalty()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                epoch_losses.append(nll.detach().mean())
                progress.grad_steps += 1
                if max_grad_steps is not None and progress.grad_steps >= max_grad_steps:
                    break
            progress.epochs += 1
            progress.train_loss = float(th.stack(epoch_losses).mean())
            mse = self._evaluate(x_val, y_val)[1]
            improved = (best_mse - mse) / best_mse.clamp(min=1e-12) > self.improvement_threshold
            if bool(improved.any()):
                with th.no_grad():
                    for name, param in self._member_params().items():
                        best_state[name][improved] = param.detach()[improved]
                best_mse = th.where(improved, mse, best_mse)
                epochs_since_improvement = 0
                last_improvement_step = progress.grad_steps
            else:
                epochs_since_improvement += 1
            if epochs_since_improvement >= patience and progress.grad_steps - last_improvement_step >= patience_steps:
                break
            if max_epochs is not None and progress.epochs >= max_epochs:
                break
            if max_grad_steps is not None and progress.grad_steps >= max_grad_steps:
                break
        with th.no_grad():
            for name, param in self._member_params().items():
                param.copy_(best_state[name])
        return progress

    def _select_elites(self, x_val: th.Tensor, y_val: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Reorder the members by hold-out MSE, so that the elites are the first ``num_elites`` (prediction
        then slices the weight tensors instead of copying them); mark the model fitted.

        :return: the members' hold-out NLL and MSE after the reordering
        """
        self.eval()
        order = th.argsort(self._evaluate(x_val, y_val)[1])
        self._permute_members(order)
        nll_val, mse_val = self._evaluate(x_val, y_val)
        self.elite_indices.copy_(th.arange(self.num_elites, device=self.device))
        self.fitted.fill_(True)
        return nll_val, mse_val

    @th.no_grad()
    def reinitialize(self) -> None:
        """Draw fresh weights for every member (the constructor's initialisation, seeded from the model's
        fit generator), reset the log-variance bounds, drop the optimiser and mark the model unfitted."""
        seed = int(
            th.randint(0, 2**62, (1,), generator=self._device_generator("fit_generator"), device=self.device).item()
        )
        init_generator = th.Generator().manual_seed(seed)
        for layer in [*self.layers, self.output_layer]:
            layer.reset_parameters(init_generator)
        self.max_logvar.fill_(INIT_MAX_LOGVAR)
        self.min_logvar.fill_(INIT_MIN_LOGVAR)
        self.elite_indices.copy_(th.arange(self.num_elites, device=self.device))
        self.fitted.fill_(False)
        self.optimizer = None

    @th.no_grad()
    def _permute_members(self, order: th.Tensor) -> None:
        """Reorder the members (their parameters and Adam's moment estimates) as ``order``."""
        for param in self._member_params().values():
            param.copy_(param[order])
            if self.optimizer is not None:
                for moment in self.optimizer.state.get(param, {}).values():
                    if isinstance(moment, th.Tensor) and moment.shape == param.shape:
                        moment.copy_(moment[order])

    def _member_params(self) -> dict[str, th.Tensor]:
        """The per-member parameters (leading dimension E)."""
        prefixes = ("layers.", "output_layer.")
        return {name: p for name, p in self.named_parameters() if name.startswith(prefixes)}

    @th.no_grad()
    def _evaluate(self, x: th.Tensor, y: th.Tensor, chunk: int = 8192) -> tuple[th.Tensor, th.Tensor]:
        """Per-member NLL and MSE (E,) on normalised data."""
        nll_sum = th.zeros(self.num_members, device=self.device)
        mse_sum = th.zeros(self.num_members, device=self.device)
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk].unsqueeze(0).expand(self.num_members, -1, -1)
            yb = y[start : start + chunk]
            mean, logvar = self._core(xb)
            sq = (mean - yb) ** 2
            nll_sum += (sq * th.exp(-logvar) + logvar).mean(dim=2).sum(dim=1)
            mse_sum += sq.mean(dim=2).sum(dim=1)
        return nll_sum / x.shape[0], mse_sum / x.shape[0]

    # ------------------------------------------------------------------ persistence

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["generator"] = self.generator.get_state()
        state["fit_generator"] = self.fit_generator.get_state()
        state["optimizer"] = None  # rebuilt at the next fit
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator_state = state.pop("generator")
        fit_generator_state = state.pop("fit_generator", None)  # None: pickled before fits had a stream
        state.setdefault("disagreement_penalty", 0.0)  # models saved before the setting existed
        buffers = state.get("_buffers", {})
        if "fresh_fit_size" not in buffers:  # models saved before fresh starts existed
            buffers["fresh_fit_size"] = th.zeros((), dtype=th.long, device=buffers["fitted"].device)
        self.__dict__.update(state)
        self.generator = th.Generator(device=self.device)
        self.generator.set_state(generator_state)
        self.fit_generator = th.Generator(device=self.device)
        self.fit_generator.set_state(generator_state if fit_generator_state is None else fit_generator_state)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        # state dicts saved before fresh starts existed have no ``fresh_fit_size``: none yet
        state_dict.setdefault(prefix + "fresh_fit_size", th.zeros((), dtype=th.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"observation_dim={self.observation_dim}, action_dim={self.action_dim}, "
            f"num_members={self.num_members}, num_elites={self.num_elites}, learn_reward={self.learn_reward}"
        )


@dataclass
class _Split:
    """Row indices of one fit: validation rows, (E, N_train) bootstrap rows per member, and the counts."""

    validation: th.Tensor
    bootstrap: th.Tensor
    num_train: int
    num_holdout: int


@dataclass
class _Progress:
    """How far a fit's training got: epochs, gradient steps and the last epoch's mean training NLL."""

    epochs: int = 0
    grad_steps: int = 0
    train_loss: float = math.nan


def _check_fit_settings(
    batch_size: Any,
    patience: Any,
    patience_steps: Any,
    max_epochs: Any,
    max_grad_steps: Any,
    reinit_growth: Any,
) -> None:
    """:raises ValueError: a fit setting out of its range (the message names it)"""
    for name, value in (("batch_size", batch_size), ("patience", patience)):
        check_int(name, value, 1)
    check_int("patience_steps", patience_steps, 0)
    if reinit_growth is not None and not (
        isinstance(reinit_growth, int | float) and math.isfinite(reinit_growth) and reinit_growth > 1.0
    ):
        raise ValueError(f"reinit_growth must be None or a number > 1, got {reinit_growth!r}")
    for name, cap in (("max_epochs", max_epochs), ("max_grad_steps", max_grad_steps)):
        check_int(name, cap, 1, allow_none=True)


def _safe_std(x: th.Tensor) -> th.Tensor:
    std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else th.ones_like(x[0])
    return th.where(std < 1e-6, th.ones_like(std), std)
