"""Time per control step: ``DMDMPCPlanner`` against ``pytorch_mppi.MPPI`` on the same Pendulum dynamics.

Both planners roll the same batched analytic model (:class:`sb3_demo.dynamics.PendulumDynamics`) at equal
samples x horizon x iterations (1 iteration, 1 particle, no prior proposals), in the same process,
interleaved call by call. ``pytorch_mppi`` wants ``dynamics(state, action) -> next_state`` and a separate
``running_cost(state, action)``: its dynamics wrapper keeps the model's reward of the step it just computed
and the running cost returns it negated, so both planners pay for exactly the same model calls. The
"floor" is the arithmetic of the rollouts alone: ``horizon`` model calls on a ``samples``-row batch with
preallocated actions, no planner logic.

Run (writes the markdown table to ``benchmarks/results/planner.md``)::

    python benchmarks/planner_latency.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch as th
from pytorch_mppi import MPPI

from sb3_demo.dynamics import PendulumDynamics
from sb3_demo.planner import DMDMPCPlanner

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "planner.md"
NOTES_MARKER = "<!-- notes: kept when the tables above are regenerated -->"
DEFAULT_PLOT = Path(__file__).resolve().parent / "results" / "planner_latency.png"


Step = Callable[[th.Tensor], object]


def make_ours(model: PendulumDynamics, samples: int, horizon: int, seed: int) -> Step:
    planner = DMDMPCPlanner(
        model,
        action_dim=1,
        horizon=horizon,
        num_samples=samples,
        num_iterations=1,
        num_particles=1,
        prior=None,
        temperature=1.0,
        init_std=0.5,  # 1.0 N m in environment units, the same noise as MPPI's below
        action_low=[-model.max_torque],
        action_high=[model.max_torque],
        seed=seed,
    )

    def step(state: th.Tensor) -> object:
        return planner.plan(state[None]).action[0]  # (S,) -> (1, S) -> (A,), as MPPI's command(state)

    return step


def make_mppi(model: PendulumDynamics, samples: int, horizon: int) -> Step:
    last_reward: list[th.Tensor] = []

    def dynamics(state: th.Tensor, action: th.Tensor) -> th.Tensor:
        next_state, reward, _ = model(state, action)
        last_reward[:] = [reward]
        return next_state

    def running_cost(state: th.Tensor, action: th.Tensor) -> th.Tensor:
        return -last_reward[0]

    controller = MPPI(
        dynamics,
        running_cost,
        nx=3,
        noise_sigma=th.tensor([[1.0]]),
        num_samples=samples,
        horizon=horizon,
        lambda_=1.0,
        u_min=th.tensor([-model.max_torque]),
        u_max=th.tensor([model.max_torque]),
    )
    return controller.command


def make_floor(model: PendulumDynamics, samples: int, horizon: int) -> Step:
    actions = th.zeros(horizon, samples, 1)

    def rollout(state: th.Tensor) -> object:
        s = state[None].expand(samples, 3)
        for h in range(horizon):
            s, _, _ = model(s, actions[h])
        return s

    return rollout


def time_size(samples: int, horizon: int, calls: int, warmup: int, seed: int) -> dict[str, dict[str, float]]:
    """Median milliseconds per call of each contender, interleaved (rotating order) in this process.

    :return: ``{"wall": {name: ms}, "cpu": {name: ms}}``: wall-clock time, and this thread's CPU time
        (``time.thread_time``), which is not inflated when the OS schedules other processes mid-call
    """
    model = PendulumDynamics()
    th.manual_seed(seed)  # pytorch_mppi samples from torch's global generator
    contenders = {
        "ours": make_ours(model, samples, horizon, seed),
        "mppi": make_mppi(model, samples, horizon),
        "floor": make_floor(model, samples, horizon),
    }
    state = th.tensor([-1.0, 0.0, 0.0])  # hanging down, at rest
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name](state)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for i in range(calls):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start_cpu, start = time.thread_time(), time.perf_counter()
            contenders[name](state)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.thread_time() - start_cpu)
    return {
        "wall": {name: 1e3 * statistics.median(t) for name, t in wall.items()},
        "cpu": {name: 1e3 * statistics.median(t) for name, t in cpu.items()},
    }


def plot(cpu_times: dict[tuple[int, int], dict[str, float]], path: Path) -> None:
    """Grouped bars: thread CPU ms per control step of each contender at each size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = list(cpu_times)
    x = np.arange(len(sizes))
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, (name, label) in zip(
        (-0.27, 0.0, 0.27), (("ours", "DMDMPCPlanner"), ("mppi", "pytorch_mppi.MPPI"), ("floor", "rollouts only"))
    ):
        ax.bar(x + offset, [cpu_times[size][name] for size in sizes], width=0.27, label=label)
    ax.set_xticks(x, [f"K={k}\nH={h}" for k, h in sizes])
    ax.set_ylabel("ms per control step (thread CPU, median)")
    ax.set_title("Pendulum-v1 analytic model, 1 iteration, 1 thread")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def machine_notes() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import pytorch_mppi

    mppi_version = getattr(pytorch_mppi, "__version__", None)
    if mppi_version is None:
        from importlib.metadata import version

        mppi_version = version("pytorch_mppi")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs (shared), torch {th.__version__} with "
        f"{th.get_num_threads()} thread(s), pytorch_mppi {mppi_version}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--horizons", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--calls", type=int, default=50, help="timed calls per contender and size (median)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file ('-' for none)")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG bar chart ('-' for none)")
    args = parser.parse_args(argv)
    if args.calls < 20:
        parser.error("--calls must be >= 20 (median of at least 20 calls)")
    th.set_num_threads(args.threads)

    header = (
        "| samples | horizon | ours ms | pytorch_mppi ms | ours / mppi | floor ms | ours / floor |\n"
        "|--------:|--------:|--------:|----------------:|------------:|---------:|-------------:|"
    )
    rows: dict[str, list[str]] = {"wall": [], "cpu": []}
    cpu_times: dict[tuple[int, int], dict[str, float]] = {}
    print(header, flush=True)
    for samples in args.samples:
        for horizon in args.horizons:
            timings = time_size(samples, horizon, args.calls, args.warmup, args.seed)
            cpu_times[(samples, horizon)] = timings["cpu"]
            for clock, t in timings.items():
                ours, mppi, floor = t["ours"], t["mppi"], t["floor"]
                rows[clock].append(
                    f"| {samples} | {horizon} | {ours:.2f} | {mppi:.2f} | {ours / mppi:.2f} "
                    f"| {floor:.2f} | {ours / floor:.2f} |"
                )
            print(rows["wall"][-1], "wall", flush=True)
            print(rows["cpu"][-1], "thread CPU", flush=True)

    if str(args.plot) != "-":
        plot(cpu_times, args.plot)
    command = " ".join(["python benchmarks/planner_latency.py", *(sys.argv[1:] if argv is None else argv)])
    if str(args.output) == "-":
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    notes = ""  # hand-written analysis below the marker survives a re-run
    if args.output.exists():
        previous = args.output.read_text()
        if NOTES_MARKER in previous:
            notes = "\n" + previous[previous.index(NOTES_MARKER) :]
    args.output.write_text(
        "# Planner latency: DMDMPCPlanner vs pytorch_mppi.MPPI\n\n"
        f"Command: `{command}`\n\n"
        f"Median of {args.calls} interleaved calls per cell after {args.warmup} warm-up calls; one control "
        "step = one `plan()` / `command()` call with 1 iteration, 1 particle, no prior proposals, on the "
        "Pendulum-v1 analytic model, float32, CPU. Floor = the rollouts alone (horizon model calls on the "
        "samples batch).\n\n"
        f"Machine: {machine_notes()}.\n\n"
        "## Thread CPU time per control step (median, `time.thread_time`)\n\n"
        "Not inflated when the OS runs another process in the middle of a call (the machine is shared).\n\n"
        f"{header}\n" + "\n".join(rows["cpu"]) + "\n\n"
        "## Wall-clock time per control step (median, `time.perf_counter`)\n\n"
        f"{header}\n" + "\n".join(rows["wall"]) + "\n" + notes
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
