"""Time per control step: ``DMDMPCPlanner`` against ``pytorch_mppi.MPPI`` on the same dynamics.

Both planners roll the same batched model at equal samples x horizon x iterations (1 iteration, 1
particle, no prior proposals), in the same process, interleaved call by call. ``--model pendulum`` (the
default) is the Pendulum analytic model (:class:`sb3_demo.dynamics.PendulumDynamics`); ``--model leg`` is
the 2R leg's learned ensemble at the size its hardware benchmark uses (5 members of 2x64, 4 elites, the
leg's reward function; 10-dimensional observations, 2 actions), at the leg's planner sizes (e.g.
``--samples 16 32 --horizons 2 3``), with one more column: "net", the arithmetic of the ensemble's
layers alone (its batched matrix products and activations for the rows of each call, no glue).

``pytorch_mppi`` wants ``dynamics(state, action) -> next_state`` and a separate ``running_cost(state,
action)``: its dynamics wrapper keeps the model's reward of the step it just computed and the running cost
returns it negated, so both planners pay for exactly the same model calls. The "floor" is the arithmetic
of the rollouts alone: ``horizon`` model calls on a ``samples``-row batch with preallocated actions, no
planner logic. Every contender runs without autograd (``th.no_grad``), as a planner does.

Run (writes the markdown table to ``benchmarks/results/planner.md``, or ``planner_leg.md``)::

    python benchmarks/planner_latency.py
    python benchmarks/planner_latency.py --model leg --samples 16 32 --horizons 2 3 --calls 200
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

from sb3_demo.dynamics import EnsembleDynamics, PendulumDynamics
from sb3_demo.planner import DMDMPCPlanner

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = {"pendulum": RESULTS / "planner.md", "leg": RESULTS / "planner_leg.md"}
NOTES_MARKER = "<!-- notes: kept when the tables above are regenerated -->"
DEFAULT_PLOT = {"pendulum": RESULTS / "planner_latency.png", "leg": RESULTS / "planner_latency_leg.png"}
# the leg's learned model in benchmarks/hardware_leg.py (MODEL_SIZES["leg"])
LEG_MODEL = dict(num_members=5, num_elites=4, hidden_sizes=(64, 64))
MODEL_TEXT = {
    "pendulum": "the Pendulum-v1 analytic model",
    "leg": "the 2R leg's learned ensemble (5 members of 2x64, 4 elites, the leg's reward function)",
}


Step = Callable[[th.Tensor], object]


class Task:
    """A model to plan through, with its dimensions, action bound and a start state."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.model: PendulumDynamics | EnsembleDynamics
        if name == "pendulum":
            self.model = PendulumDynamics()
            self.state_dim, self.action_dim, self.max_action = 3, 1, self.model.max_torque
            self.state = th.tensor([-1.0, 0.0, 0.0])  # hanging down, at rest
        else:
            from sb3_demo.envs import leg_reward_fn

            self.model = EnsembleDynamics(10, 2, reward_fn=leg_reward_fn, seed=seed, **LEG_MODEL)  # type: ignore[arg-type]
            self.model.eval()
            self.state_dim, self.action_dim, self.max_action = 10, 2, 1.0
            # home pose, at rest, phase 0 (sin 0, cos 1), no previous action
            self.state = th.tensor([0.3, -0.6, 0.0, 0.0, -0.45, 0.0, 0.0, 1.0, 0.0, 0.0])

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        return self.model(states, actions)


def make_ours(task: Task, samples: int, horizon: int, seed: int) -> Step:
    model = task.model
    planner = DMDMPCPlanner(
        model,
        action_dim=task.action_dim,
        horizon=horizon,
        num_samples=samples,
        num_iterations=1,
        num_particles=1,
        prior=None,
        temperature=1.0,
        init_std=0.5,  # of the half-range: the same noise as MPPI's below
        action_low=[-task.max_action] * task.action_dim,
        action_high=[task.max_action] * task.action_dim,
        seed=seed,
    )

    def step(state: th.Tensor) -> object:
        return planner.plan(state[None]).action[0]  # (S,) -> (1, S) -> (A,), as MPPI's command(state)

    return step


def make_mppi(task: Task, samples: int, horizon: int) -> Step:
    model = task.model
    last_reward: list[th.Tensor] = []

    def dynamics(state: th.Tensor, action: th.Tensor) -> th.Tensor:
        next_state, reward, _ = model(state, action)
        last_reward[:] = [reward]
        return next_state

    def running_cost(state: th.Tensor, action: th.Tensor) -> th.Tensor:
        return -last_reward[0]

    sigma = 0.5 * task.max_action
    controller = MPPI(
        dynamics,
        running_cost,
        nx=task.state_dim,
        noise_sigma=sigma**2 * th.eye(task.action_dim),
        num_samples=samples,
        horizon=horizon,
        lambda_=1.0,
        u_min=th.full((task.action_dim,), -task.max_action),
        u_max=th.full((task.action_dim,), task.max_action),
    )
    return controller.command


def make_floor(task: Task, samples: int, horizon: int) -> Step:
    actions = th.zeros(horizon, samples, task.action_dim)
    model = task.model

    def rollout(state: th.Tensor) -> object:
        s = state[None].expand(samples, task.state_dim)
        for h in range(horizon):
            s, _, _ = model(s, actions[h])
        return s

    return rollout


def make_net(task: Task, samples: int, horizon: int) -> Step:
    """The ensemble's layers alone: ``horizon`` times the batched products and activations of the rows of
    one call, grouped by elite as the model groups them (no normalisation, reward or other glue)."""
    model = task.model
    assert isinstance(model, EnsembleDynamics)
    elites = min(samples, model.num_elites)
    x = th.zeros(elites, -(-samples // elites), model.input_dim)

    def layers(state: th.Tensor) -> object:
        out = x
        for _ in range(horizon):
            h = x
            for layer in model.layers:
                h = th.nn.functional.silu(layer(h, elites), inplace=True)
            out = model.output_layer(h, elites)
        return out

    return layers


def time_size(
    samples: int, horizon: int, calls: int, warmup: int, seed: int, model_name: str = "pendulum"
) -> dict[str, dict[str, float]]:
    """Median milliseconds per call of each contender, interleaved (rotating order) in this process.

    :return: ``{"wall": {name: ms}, "cpu": {name: ms}}``: wall-clock time, and this thread's CPU time
        (``time.thread_time``), which is not inflated when the OS schedules other processes mid-call
    """
    task = Task(model_name, seed)
    th.manual_seed(seed)  # pytorch_mppi samples from torch's global generator
    contenders = {
        "ours": make_ours(task, samples, horizon, seed),
        "mppi": make_mppi(task, samples, horizon),
        "floor": make_floor(task, samples, horizon),
    }
    if model_name == "leg":
        contenders["net"] = make_net(task, samples, horizon)
    state = task.state
    names = list(contenders)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with th.no_grad():  # a learned model's parameters would otherwise record a graph on every call
        for _ in range(warmup):
            for name in names:
                contenders[name](state)
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
    parser.add_argument("--model", choices=list(MODEL_TEXT), default="pendulum")
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--horizons", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--calls", type=int, default=50, help="timed calls per contender and size (median)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="markdown file ('-' for none)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG bar chart ('-' for none)")
    args = parser.parse_args(argv)
    if args.calls < 20:
        parser.error("--calls must be >= 20 (median of at least 20 calls)")
    output = args.output if args.output is not None else DEFAULT_OUTPUT[args.model]
    plot_path = args.plot if args.plot is not None else DEFAULT_PLOT[args.model]
    th.set_num_threads(args.threads)

    with_net = args.model == "leg"
    header = (
        "| samples | horizon | ours ms | pytorch_mppi ms | ours / mppi | floor ms | ours / floor |"
        + (" net ms | ours / net |" if with_net else "")
        + "\n|--------:|--------:|--------:|----------------:|------------:|---------:|-------------:|"
        + ("-------:|-----------:|" if with_net else "")
    )
    rows: dict[str, list[str]] = {"wall": [], "cpu": []}
    cpu_times: dict[tuple[int, int], dict[str, float]] = {}
    load_before = os.getloadavg()[0]
    print(header, flush=True)
    for samples in args.samples:
        for horizon in args.horizons:
            timings = time_size(samples, horizon, args.calls, args.warmup, args.seed, args.model)
            cpu_times[(samples, horizon)] = timings["cpu"]
            for clock, t in timings.items():
                ours, mppi, floor = t["ours"], t["mppi"], t["floor"]
                net = f" {t['net']:.3f} | {ours / t['net']:.1f} |" if with_net else ""
                rows[clock].append(
                    f"| {samples} | {horizon} | {ours:.2f} | {mppi:.2f} | {ours / mppi:.2f} "
                    f"| {floor:.2f} | {ours / floor:.2f} |" + net
                )
            print(rows["wall"][-1], "wall", flush=True)
            print(rows["cpu"][-1], "thread CPU", flush=True)
    load = f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    print(load)

    if str(plot_path) != "-":
        plot(cpu_times, plot_path)
    command = " ".join(["python benchmarks/planner_latency.py", *(sys.argv[1:] if argv is None else argv)])
    if str(output) == "-":
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    notes = ""  # hand-written analysis below the marker survives a re-run
    if output.exists():
        previous = output.read_text()
        if NOTES_MARKER in previous:
            notes = "\n" + previous[previous.index(NOTES_MARKER) :]
    net_text = (
        " Net = the ensemble's layers alone (their batched products and activations, horizon times)."
        if with_net
        else ""
    )
    output.write_text(
        "# Planner latency: DMDMPCPlanner vs pytorch_mppi.MPPI\n\n"
        f"Command: `{command}`\n\n"
        f"Median of {args.calls} interleaved calls per cell after {args.warmup} warm-up calls; one control "
        "step = one `plan()` / `command()` call with 1 iteration, 1 particle, no prior proposals, on "
        f"{MODEL_TEXT[args.model]}, float32, CPU. Floor = the rollouts alone (horizon model calls on the "
        f"samples batch).{net_text}\n\n"
        f"Machine: {machine_notes()}; {load}.\n\n"
        "## Thread CPU time per control step (median, `time.thread_time`)\n\n"
        "Not inflated when the OS runs another process in the middle of a call (the machine is shared).\n\n"
        f"{header}\n" + "\n".join(rows["cpu"]) + "\n\n"
        "## Wall-clock time per control step (median, `time.perf_counter`)\n\n"
        f"{header}\n" + "\n".join(rows["wall"]) + "\n" + notes
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
