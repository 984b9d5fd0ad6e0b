"""Reading the platform's environment settings so that every problem of a part is reported at once.

A resource's `*_resource_for(profile)` reads its variables through one `SettingsReader` and raises
`ConfigurationProblems` listing each missing or invalid one with its allowed values, instead of the
first only; `babylon doctor` asks every part and lists them all. Imports no Dagster, so commands that
need one setting (`babylon lineage` reads the model name) stay fast.
"""

import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

from babylon_assets.errors import ConfigurationError

MODEL_NAME_ENV = "BABYLON_MODEL_NAME"
DEFAULT_MODEL_NAME = "babylon-policy"

_Choice = TypeVar("_Choice", bound=str)


class ConfigurationProblems(ConfigurationError):
    """One or more settings are missing or invalid; `problems` names each with what to set."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class SettingsReader:
    """Reads variables and records a problem for each missing or invalid one; `check()` raises them all."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self.problems: list[str] = []

    def value(self, name: str) -> str | None:
        """The variable's value, None when unset or blank."""
        return self._environ.get(name, "").strip() or None

    def required(self, name: str, why: str) -> str:
        """The variable's value; when unset, a problem saying `why` it is needed (and "" for now)."""
        value = self.value(name)
        if value is None:
            self.problems.append(f"{name} is not set; {why}")
            return ""
        return value

    def choice(self, name: str, allowed: Sequence[_Choice], default: _Choice | None, why: str = "") -> _Choice:
        """One of `allowed`; `default` when unset, or a problem when there is none. Returns `allowed[0]` after
        a problem so that reading can go on (the caller raises through `check()` before using it)."""
        raw = self.value(name)
        options = ", ".join(allowed)
        if raw is None:
            if default is None:
                self.problems.append(f"{name} is not set; {why or 'it is required'}: set it to one of {options}")
                return allowed[0]
            return default
        for option in allowed:
            if raw == option:
                return option
        self.problems.append(f"{name}={raw!r} is not one of {options}; set it to one of them")
        return allowed[0]

    def threads(self, name: str) -> int | None:
        """A positive thread count; None when unset, or a problem (and None) when it is not one."""
        raw = self.value(name)
        if raw is None or (raw.isdigit() and int(raw) > 0):
            return None if raw is None else int(raw)
        self.problems.append(f"{name}={raw!r} is not a positive number of threads; set e.g. 1")
        return None

    def check(self) -> None:
        if self.problems:
            raise ConfigurationProblems(self.problems)


def model_name_from_env() -> str:
    """The persistent model's name: BABYLON_MODEL_NAME, or the default."""
    return SettingsReader().value(MODEL_NAME_ENV) or DEFAULT_MODEL_NAME
