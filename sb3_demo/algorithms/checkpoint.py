"""A DeMoSAC/DeMoTD3 from a plain SAC/TD3 checkpoint, and a clear error when one is loaded as a DeMo file.

Someone adding the planning layer to an existing project has a trained SAC or TD3: its actor and critic
(with their optimisers, and SAC's entropy coefficient) become the DeMo algorithm's starting point, with a
fresh dynamics model.
"""

from __future__ import annotations

import inspect
import io
import pathlib
import zipfile
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import json_to_data, open_path

# what the DeMo algorithm takes over from the checkpoint unless the caller passes it
INHERITED_SETTINGS = (
    "policy_kwargs",
    "gamma",
    "tau",
    "batch_size",
    "use_sde",
    "policy_delay",
    "target_policy_noise",
    "target_noise_clip",
    "seed",
)


def check_demo_checkpoint(
    path: str | pathlib.Path | io.BufferedIOBase,
    cls_name: str,
    from_method: str,
    custom_objects: dict[str, Any] | None = None,
) -> None:
    """Raise a clear error when ``path`` is not a DeMo algorithm's checkpoint (e.g. a plain SAC's).

    Only the file's ``data`` entry is read (no network weights): SB3's ``load`` reads the whole file next.
    A file that is not a readable SB3 zip is left to ``load`` to report.

    :param path: what ``load`` was given
    :param cls_name: the DeMo algorithm's name, for the message
    :param from_method: the classmethod that starts a DeMo algorithm from such a file (``"from_sac"``)
    :param custom_objects: ``load``'s ``custom_objects`` (they replace entries of ``data`` that fail to load)
    :raises ValueError: the file holds no DeMo settings
    """
    position = path.tell() if isinstance(path, io.BufferedIOBase) else None
    file = open_path(path, "r", suffix="zip")
    try:
        with zipfile.ZipFile(file) as archive:
            text = archive.read("data").decode() if "data" in archive.namelist() else None
    except zipfile.BadZipFile:
        text = None
    finally:
        if isinstance(path, io.BufferedIOBase):
            path.seek(position or 0)
        else:
            file.close()
    data = json_to_data(text, custom_objects) if text is not None else None
    if data is not None and "planner_kwargs" not in data:
        policy_class = data.get("policy_class")
        what = f"{policy_class.__module__}.{policy_class.__qualname__}" if isinstance(policy_class, type) else "?"
        raise ValueError(
            f"{path} is not a {cls_name} checkpoint: it holds no planner settings (its policy is {what}, e.g. a "
            f"plain SAC/TD3 file). To start a {cls_name} from a trained SAC/TD3 (its actor and critic, a fresh "
            f"dynamics model), use {cls_name}.{from_method}(path, env=...)"
        )


def demo_from_base(
    cls: type[BaseAlgorithm],
    base_cls: type[BaseAlgorithm],
    source: BaseAlgorithm | str | pathlib.Path,
    env: Any = None,
    device: Any = "auto",
    **demo_kwargs: Any,
) -> Any:
    """A new ``cls`` (DeMoSAC/DeMoTD3) whose actor and critic start as those of a ``base_cls`` (SAC/TD3).

    :param cls: the DeMo algorithm
    :param base_cls: the algorithm the checkpoint is of
    :param source: a ``base_cls`` instance or the path of its ``save`` file
    :param env: the training env (default: the source's env, when it has one)
    :param device: the device (a path is loaded onto it)
    :param demo_kwargs: every other argument of ``cls`` (planner_kwargs, model, learning_rate, ...);
        ``INHERITED_SETTINGS`` (policy_kwargs, gamma, tau, batch_size, ...) default to the source's
    :raises TypeError: the source is not a ``base_cls``
    :raises ValueError: ``policy_kwargs`` asks for LayerNorm critics, whose weights the source has none of
    """
    if (demo_kwargs.get("policy_kwargs") or {}).get("critic_layer_norm"):
        raise ValueError(
            f"{cls.__name__}: critic_layer_norm=True cannot start from a {base_cls.__name__}: its critic has no "
            f"LayerNorm, so its weights do not fit one. Start from it without critic_layer_norm, or train a "
            f"{cls.__name__} with policy_kwargs=dict(critic_layer_norm=True) from scratch"
        )
    base = source if isinstance(source, BaseAlgorithm) else base_cls.load(source, device=device)
    if not isinstance(base, base_cls):
        raise TypeError(f"{cls.__name__}: expected a {base_cls.__name__} (or its file), got {type(base).__name__}")
    env = env if env is not None else base.get_env()
    if env is None:
        raise ValueError(f"{cls.__name__}: pass env=..., the {base_cls.__name__} checkpoint has no env")
    takes = inspect.signature(base_cls.__init__).parameters
    kwargs = {name: getattr(base, name) for name in INHERITED_SETTINGS if name in takes and hasattr(base, name)}
    if isinstance(getattr(base, "ent_coef", None), float | int):  # a fixed entropy coefficient
        kwargs["ent_coef"] = base.ent_coef  # type: ignore[attr-defined]
    kwargs.update(demo_kwargs)
    demo: Any = cls(type(base.policy), env, device=device, **kwargs)
    # the policy (actor, critic, targets) and its optimisers; the new dynamics model keeps its fresh weights
    demo.set_parameters(base.get_parameters(), exact_match=False, device=demo.device)
    base_log_ent = getattr(base, "log_ent_coef", None)
    if base_log_ent is not None and getattr(demo, "log_ent_coef", None) is not None:
        demo.log_ent_coef.data.copy_(base_log_ent.data.to(demo.device))
    return demo
