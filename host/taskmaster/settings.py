"""One frozen Settings object, and the only reader of os.environ.

Precedence: defaults < TOML file (`--config` or TASKMASTER_CONFIG) < environment
(`TASKMASTER_<FIELD>`, `TASKMASTER_<GROUP>_<FIELD>`) < command-line flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmaster.errors import ConfigError

ENV_PREFIX = "TASKMASTER_"
CONFIG_ENV = "TASKMASTER_CONFIG"


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    host: str = "127.0.0.1"
    """Interface the API binds to."""
    port: int = 8000
    graphiql: bool = True
    """Serve GraphiQL at /graphql to browsers."""
    max_body_bytes: int = 2 * 1024 * 1024
    """Larger requests get HTTP 413 before they are parsed."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    processes: int = 0
    """Worker processes started by `serve`; 0 means one per CPU."""
    concurrency: int = 10
    """Jobs run at once per queue, unless `queues` says otherwise."""
    queues: tuple[str, ...] = ()
    """`name=concurrency` entries; empty means every queue of the loaded functions."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM, how long running jobs may go on before they are requeued."""
    lease_s: float = 10.0
    """A running job's lease; a worker that stops renewing it (dies) loses its jobs."""
    max_stalls: int = 3
    """Worker deaths a job may cause before it is dead-lettered as poison."""
    weights: tuple[str, ...] = ()
    """Dispatch weights CRITICAL:HIGH:NORMAL:LOW, `8:4:2:1` for all queues or
    `queue=8:4:2:1` for one (default 8:4:2:1)."""


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    start_timeout_s: float = 15.0
    """How long the embedded Valkey may take to answer after it is started."""


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    keep_completed_s: float = 24 * 3600.0
    """How long completed and cancelled jobs (with history) stay; functions may override."""
    keep_completed_count: int = 0
    """Most completed/cancelled jobs kept per queue (0: no limit besides the period)."""
    keep_dead_s: float = 7 * 24 * 3600.0
    """How long dead-lettered jobs stay; functions may override."""


@dataclass(frozen=True, kw_only=True)
class ReloadSettings:
    drain_timeout_s: float = 30.0
    """How long an old version's running jobs may go on before they are requeued."""
    watch: bool = True
    """Reload when the installed function distributions change."""
    watch_interval_s: float = 2.0
    """How often the installed distributions are compared with the loaded ones."""
    install_enabled: bool = False
    """Allow `installFunction` over the API (runs pip as the host's user: code execution)."""
    install_index_url: str | None = None
    """Package index for installs (pip's default when unset)."""
    install_find_links: tuple[str, ...] = ()
    """Local directories or pages of wheels for installs."""
    install_target: str | None = None
    """Install into this directory (on the host's path) instead of site-packages."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    redis_url: str | None = None
    """External Redis ≥ 6.2 or Valkey; without it `serve` starts an embedded Valkey."""
    data_dir: Path = Path(".taskmaster")
    """Where the embedded Valkey keeps its append-only file."""
    server_url: str = "http://127.0.0.1:8000/graphql"
    """The GraphQL endpoint that client commands (`submit`, `job`) talk to."""
    api: ApiSettings = field(default_factory=ApiSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    reload: ReloadSettings = field(default_factory=ReloadSettings)

    def replace(self, **changes: Any) -> Settings:
        """A copy with dotted keys changed: `settings.replace(**{"api.port": 8001})`."""
        return _apply(self, changes, source="override")


def load_settings(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from defaults, a TOML file, the environment and CLI overrides."""
    env = os.environ if env is None else env
    settings = Settings()
    path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if path is not None:
        settings = _apply(settings, _read_toml(path), source=str(path))
    settings = _apply(settings, _from_env(env), source="environment")
    return _apply(settings, {k: v for k, v in (overrides or {}).items() if v is not None},
                  source="command line")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def _env_names() -> dict[str, str]:
    """TASKMASTER_* variable → dotted settings key."""
    names: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        group = _dataclass_type(f)
        if group is None:
            names[ENV_PREFIX + f.name.upper()] = f.name
        else:
            for sub in dataclasses.fields(group):
                names[f"{ENV_PREFIX}{f.name.upper()}_{sub.name.upper()}"] = f"{f.name}.{sub.name}"
    return names


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    names = _env_names()
    found: dict[str, Any] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        if var not in names:
            raise ConfigError(f"unknown setting {var}; known: {', '.join(sorted(names))}")
        found[names[var]] = (var, value)
    return found


def _apply(settings: Settings, changes: Mapping[str, Any], *, source: str) -> Settings:
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    hints = typing.get_type_hints(Settings)
    for key, raw in changes.items():
        # Environment values arrive as (variable, text) so errors can name the variable.
        name, value = raw if isinstance(raw, tuple) and source == "environment" else (key, raw)
        group_name, _, field_name = key.partition(".")
        if group_name not in hints:
            raise ConfigError(f"unknown setting {name!r} in {source}")
        if field_name:
            group_type = hints[group_name]
            group_hints = typing.get_type_hints(group_type)
            if field_name not in group_hints:
                raise ConfigError(f"unknown setting {name!r} in {source}")
            groups.setdefault(group_name, {})[field_name] = _coerce(
                value, group_hints[field_name], name, source
            )
        else:
            top[group_name] = _coerce(value, hints[group_name], name, source)
    for group_name, values in groups.items():
        top[group_name] = dataclasses.replace(getattr(settings, group_name), **values)
    return dataclasses.replace(settings, **top)


def _coerce(value: Any, hint: Any, name: str, source: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{name} (from {source}) must be {expected}, got {value!r}")

    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if value in (None, ""):
            return None
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise bad("a boolean (true/false)")
    if hint in (int, float):
        if isinstance(value, bool):
            raise bad(f"a number ({hint.__name__})")
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise bad(f"a number ({hint.__name__})") from None
        if number < 0:
            raise bad("zero or more")
        return number
    if hint is Path:
        return Path(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        raise bad("a list")
    raise bad(f"of type {hint}")  # pragma: no cover - a new settings type needs a branch


def _dataclass_type(f: dataclasses.Field[Any]) -> type[Any] | None:
    hint = typing.get_type_hints(Settings)[f.name]
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None
