"""``python -m sb3_demo.train``: RL Zoo's training script with the demorl algorithms registered.

The same command line as ``python -m rl_zoo3.train`` (which works too, through the installed start-up hook);
this entry point registers explicitly, so it also works with the hook switched off (``SB3_DEMO_ZOO_HOOK=0``)
or when sb3_demo is only on ``PYTHONPATH``::

    python -m sb3_demo.train --algo demorl_sac --env Pendulum-v1 -n 3000 --progress
"""

from __future__ import annotations


def main() -> None:
    """Register the demorl algorithms with rl_zoo3, then run ``rl_zoo3.train.train()`` on ``sys.argv``."""
    from sb3_demo.zoo import register

    register()
    from rl_zoo3.train import train

    train()


if __name__ == "__main__":
    main()
