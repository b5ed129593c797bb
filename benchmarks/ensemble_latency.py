"""Planning latency of DMD-MPC through EnsembleDynamics against its arithmetic floor, same process.

Reference defaults (the 2022 DeMoRL code): horizon 3, 105 sequences, 4 particles, 5 iterations, an
ensemble of 7 members (5 elites) of 4 x 200 Swish layers, HalfCheetah dimensions (17 obs, 6 actions).
One control step then makes 15 model calls of 420 rows; with trajectory sampling each call is, per layer,
one batched matrix product over the 5 elites with 84 rows each.

The floor is the time of exactly those batched products (``th.baddbmm`` on preallocated tensors of the
same shapes, 15 calls x 5 layers), measured in the same run; the ratio latency / floor is what the
ensemble's and the planner's Python and element-wise work cost on top. A second row adds an SB3-sized
actor prior (5 of the 105 sequences) and critic terminal value (256 x 256 MLPs), with their matrix
products added to the floor.

    python benchmarks/ensemble_latency.py            # prints a markdown table
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch as th
from torch import nn

from sb3_demo import DMDMPCPlanner, EnsembleDynamics

OBS_DIM, ACT_DIM = 17, 6


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def ensemble_floor(model: EnsembleDynamics, rows: int, calls: int) -> Callable[[], None]:
    """The batched matrix products of ``calls`` TS model calls of ``rows`` rows, on preallocated tensors."""
    k = model.num_elites
    per_member = -(-rows // k)
    layers = [*model.layers, model.output_layer]
    weights = [(layer.bias[:k].detach(), layer.weight[:k].detach()) for layer in layers]
    inputs = [th.randn(k, per_member, layer.in_features) for layer in layers]
    outputs = [th.empty(k, per_member, layer.out_features) for layer in layers]

    def run() -> None:
        for _ in range(calls):
            for (bias, weight), x, out in zip(weights, inputs, outputs):
                th.baddbmm(bias, x, weight, out=out)

    return run


def mlp_floor(net: nn.Sequential, rows: int, calls: int) -> Callable[[], None]:
    linears = [m for m in net if isinstance(m, nn.Linear)]
    inputs = [th.randn(rows, m.in_features) for m in linears]
    outputs = [th.empty(rows, m.out_features) for m in linears]

    def run() -> None:
        for _ in range(calls):
            for m, x, out in zip(linears, inputs, outputs):
                th.addmm(m.bias.detach(), x, m.weight.detach().t(), out=out)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    th.manual_seed(0)

    horizon, particles, iterations, sequences = 3, 4, 5, 105
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, num_members=7, num_elites=5, seed=0)
    # fit once on random data so that normalisers and elites are set as after real training
    data = th.randn(2000, OBS_DIM), th.rand(2000, ACT_DIM) * 2 - 1
    model.fit(data[0], data[1], data[0] + 0.1 * th.randn(2000, OBS_DIM), th.randn(2000), max_grad_steps=2)
    state = th.randn(1, OBS_DIM)
    rows = sequences * particles
    calls = horizon * iterations

    actor = mlp([OBS_DIM, 256, 256, ACT_DIM])
    critic = mlp([OBS_DIM + ACT_DIM, 256, 256, 1])

    def prior(obs: th.Tensor) -> th.Tensor:
        return th.tanh(actor(obs))

    def value(obs: th.Tensor) -> th.Tensor:
        return critic(th.cat([obs, prior(obs)], dim=1)).squeeze(1)

    results = []
    configs = {
        "ensemble only (105 Gaussian sequences)": dict(num_samples=sequences),
        "+ actor prior (100 + 5 sequences) and critic terminal value": dict(
            num_samples=100, prior=prior, prior_fraction=0.05, terminal_value=value
        ),
    }
    for name, extra in configs.items():
        planner = DMDMPCPlanner(
            model, ACT_DIM, horizon=horizon, num_particles=particles, num_iterations=iterations, seed=0, **extra
        )
        floors = [ensemble_floor(model, rows, calls)]
        if "prior" in extra:
            prior_rows = 5 * (horizon - 1) + 5  # prior rollouts' model steps are counted in the plan, not here
            floors += [
                ensemble_floor(model, 5, horizon - 1),
                mlp_floor(actor, prior_rows, 1),  # actions of the prior sequences
                mlp_floor(actor, rows, iterations),  # terminal value: actor at s_H
                mlp_floor(critic, rows, iterations),  # terminal value: critic at s_H
            ]

        def floor_all(floors: list[Callable[[], None]] = floors) -> None:
            for f in floors:
                f()

        with th.no_grad():
            # alternate plan and floor, so that load changes hit both alike; the ratio is taken per pair
            timed(lambda planner=planner: planner.plan(state), 1, warmup=3)
            timed(floor_all, 1, warmup=3)
            plan_times: list[float] = []
            floor_times: list[float] = []
            for _ in range(args.repeats):
                plan_times += timed(lambda planner=planner: planner.plan(state), 1, warmup=0)
                floor_times += timed(floor_all, 1, warmup=0)
        ratios = [p / f for p, f in zip(plan_times, floor_times)]
        results.append(
            (
                name,
                1e3 * statistics.median(plan_times),
                1e3 * min(plan_times),
                1e3 * statistics.median(floor_times),
                1e3 * min(floor_times),
                statistics.median(ratios),
            )
        )

    layers = [*model.layers, model.output_layer]
    flops = 2 * rows * calls * sum(layer.in_features * layer.out_features for layer in layers)
    print(
        f"threads={args.threads}, rows per model call={rows}, model calls per control step={calls}, "
        f"ensemble GFLOP per control step={flops / 1e9:.2f}"
    )
    print()
    print(
        "| configuration | plan latency median (min) [ms] | matmul floor median (min) [ms] | "
        "latency / floor (median of pairs) | ratio of minima |"
    )
    print("|---|---|---|---|---|")
    for name, plan_ms, plan_min, floor_ms, floor_min, ratio in results:
        print(
            f"| {name} | {plan_ms:.1f} ({plan_min:.1f}) | {floor_ms:.1f} ({floor_min:.1f}) | {ratio:.2f}x | "
            f"{plan_min / floor_min:.2f}x |"
        )


if __name__ == "__main__":
    main()
