"""``make demo``'s script (sb3_demo.demo): its arguments, the RL Zoo commands, the summary of evaluations.npz files."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sb3_demo import demo

REPO = Path(__file__).resolve().parents[1]


def write_evaluations(run: Path, steps: list[int], returns: list[list[float]]) -> None:
    run.mkdir(parents=True)
    np.savez(run / "evaluations.npz", timesteps=np.array(steps), results=np.array(returns), ep_lengths=np.ones((1,)))


def test_make_demo_runs_the_script_with_arguments_it_accepts() -> None:
    recipe = REPO.joinpath("Makefile").read_text().split("\ndemo: $(STAMP)\n", 1)[1].split("\n", 1)[0]
    assert "-m sb3_demo.demo" in recipe
    args = demo.parse_args(shlex.split(recipe.split("-m sb3_demo.demo", 1)[1]))
    # DeMoSAC gets fewer steps than SAC, and each run is evaluated more than once
    assert args.demo_steps < args.sac_steps
    assert args.demo_steps >= 2 * args.eval_freq
    assert args.plot == args.log_folder / f"demo_{args.env}.png"


def test_both_runs_are_rl_zoo_commands_with_the_same_seed_and_evaluations() -> None:
    args = demo.parse_args(["--seed", "3", "--demo-steps", "600", "--sac-steps", "900", "--log-folder", "out"])
    demo_cmd = demo.train_command(args, "demorl_sac", args.demo_steps, progress=True)
    sac_cmd = demo.train_command(args, "sac", args.sac_steps, progress=False)
    for cmd, algo, steps in ((demo_cmd, "demorl_sac", "600"), (sac_cmd, "sac", "900")):
        assert cmd[1:3] == ["-m", "rl_zoo3.train"]
        assert cmd[cmd.index("--algo") + 1] == algo
        assert cmd[cmd.index("-n") + 1] == steps
        assert cmd[cmd.index("--seed") + 1] == "3"
        assert cmd[cmd.index("--env") + 1] == "Pendulum-v1"
        assert cmd[cmd.index("-f") + 1] == "out"
        assert cmd[cmd.index("--eval-freq") + 1] == "250"
    assert "--progress" in demo_cmd and "--progress" not in sac_cmd


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--demo-steps", "0"], "--demo-steps must be positive"),
        (["--eval-episodes", "-1"], "--eval-episodes must be positive"),
        (["--demo-steps", "200", "--eval-freq", "250"], "leaves a run without an evaluation"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        demo.parse_args(argv)
    assert message in capsys.readouterr().err


def test_summary_reads_the_latest_runs_prints_one_line_each_and_draws_both_curves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    # an older DeMoSAC run (_9) and the latest one (_10: numeric order, not string order)
    write_evaluations(logs / "demorl_sac" / "Pendulum-v1_9", [250], [[-1500.0, -1500.0]])
    demo_returns = [[-900, -700], [-190, -170], [-150, -160]]
    write_evaluations(logs / "demorl_sac" / "Pendulum-v1_10", [250, 500, 750], demo_returns)
    write_evaluations(logs / "sac" / "Pendulum-v1_1", [250, 500, 750], [[-1500, -1400], [-1200, -1000], [-400, -300]])
    (logs / demo.TIMES_FILE).write_text(json.dumps({"demorl_sac": 2.25, "sac": 1.5}))
    args = demo.parse_args(["--summary-only", "--log-folder", str(logs), "--demo-steps", "750", "--sac-steps", "750"])
    demo.main(["--summary-only", "--log-folder", str(logs), "--demo-steps", "750", "--sac-steps", "750"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "demorl_sac reached -200 at 500 env steps, final return -155, 2.2 min"
    assert out[1] == "sac        not -200 within 750 env steps, final return -350, 1.5 min"
    assert args.plot.is_file() and args.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summaries = demo.summarize(args)
    assert [s.steps_to_threshold for s in summaries] == [500, None]
    np.testing.assert_allclose(summaries[0].returns, [-800.0, -180.0, -155.0])


def test_summary_without_times_or_evaluations(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_evaluations(logs / "demorl_sac" / "Pendulum-v1_1", [250], [[-100.0]])
    (logs / "sac" / "Pendulum-v1_1").mkdir(parents=True)
    args = demo.parse_args(["--summary-only", "--log-folder", str(logs)])
    summary = demo.summarize_run(demo.latest_run(logs, "demorl_sac", "Pendulum-v1"), "demorl_sac", -200.0, None)
    assert summary.line(-200.0).endswith("final return -100, ? min")
    with pytest.raises(FileNotFoundError, match=r"evaluations\.npz is missing"):
        demo.summarize(args)
    with pytest.raises(FileNotFoundError, match="no sac run for Hopper-v5"):
        demo.latest_run(logs, "sac", "Hopper-v5")


def fake_training(monkeypatch: pytest.MonkeyPatch, codes: dict[str, str]) -> None:
    """Replace the two RL Zoo runs by tiny Python programs (``algo -> code``)."""

    def command(args: Any, algo: str, steps: int, progress: bool) -> list[str]:
        return [sys.executable, "-c", codes[algo]]

    monkeypatch.setattr(demo, "train_command", command)


def test_train_both_runs_the_two_at_once_and_times_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_training(monkeypatch, {"demorl_sac": "import time; time.sleep(1.0)", "sac": "print('sac ran')"})
    args = demo.parse_args(["--log-folder", str(tmp_path)])
    minutes = demo.train_both(args)
    assert minutes["sac"] < minutes["demorl_sac"]  # SAC's own time, although it finished first
    assert minutes["demorl_sac"] >= 1.0 / 60
    assert json.loads((tmp_path / demo.TIMES_FILE).read_text()) == minutes
    assert (tmp_path / "sac.log").read_text() == "sac ran\n"


@pytest.mark.parametrize(("failing", "message"), [("demorl_sac", "demorl_sac failed"), ("sac", "see .*sac.log")])
def test_a_failed_training_stops_the_demo(
    failing: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = {"demorl_sac": "pass", "sac": "pass", failing: "raise SystemExit(3)"}
    fake_training(monkeypatch, codes)
    with pytest.raises(SystemExit, match=message):
        demo.train_both(demo.parse_args(["--log-folder", str(tmp_path)]))
    assert not (tmp_path / demo.TIMES_FILE).exists()
