"""How one setting is declared, read and shown; the table of every setting is `config.Config`.

A `Setting` is a field of `Config` declared with `setting(...)`: its flags, its STATESERVICE_*
variable, its default, its help, the parser of its text and the commands that take it. From
it come the command line's flags (`cli/parser.py`), `Config.load`, and a row of the settings
page (`docs/settings.md`). A parser takes `(text, source)` and raises ConfigError naming the
source (`--port` or `STATESERVICE_PORT`), so a bad value says where it came from.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stateservice.core.timing import parse_duration
from stateservice.errors import ConfigError
from stateservice.store.redis import sentinel
from stateservice.store.redis.connect import SCHEMES, redact

T = TypeVar("T")

EVENT_LOOPS = ("auto", "uvloop", "asyncio")  # --event-loop: server/eventloop.py runs the chosen one


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


Parse = Callable[[str, str], T]


class Kind(Enum):
    """How a setting's flag is written on the command line."""

    VALUE = "value"  # --port 5000
    SWITCH = "switch"  # --redis-cluster turns it on; the variable takes on/off
    ON_OFF = "on_off"  # --coalesce / --no-coalesce
    PATHS = "paths"  # --chart A --chart B; the variable separates them with os.pathsep


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """One setting: the field `name` of Config, read from `flags`, else `env`, else `default`."""

    flags: tuple[str, ...]
    env: str
    default: T
    parse: Parse[T]
    help: str
    commands: tuple[str, ...]
    kind: Kind = Kind.VALUE
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    shown: str | None = None  # the default as people read it; None: from `default`
    help_in: Mapping[str, str] = dataclasses.field(default_factory=dict)  # a command's own help wording
    name: str = ""  # the Config field's name, filled in by `table`

    @property
    def flag(self) -> str:
        """The flag a message names, e.g. `--redis` for --redis URL."""
        return self.flags[0]

    def all_flags(self) -> tuple[str, ...]:
        """Every flag, `--no-coalesce` included."""
        if self.kind is Kind.ON_OFF:
            return (*self.flags, *(f"--no-{flag.removeprefix('--')}" for flag in self.flags))
        return self.flags

    def shown_default(self) -> str | None:
        """The default as the help and the docs say it; None when there is none to show."""
        if self.shown is not None:
            return self.shown
        if self.default is None or self.default == ():
            return None
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def flag_help(self, command: str) -> str:
        """The `--help` line of the flag in `command`, ending with its variable and default."""
        text = self.help_in.get(command, self.help)
        if self.kind is Kind.PATHS:
            return f"{text} [env {self.env}, '{os.pathsep}'-separated]"
        shown = self.shown_default()
        if shown is None:
            return f"{text} [env {self.env}]"
        colon = ":" if " " in shown and shown[0].isalpha() else ""  # a phrase reads "default: the server's ..."
        return f"{text} [env {self.env}; default{colon} {shown}]"

    def read(self, args: object, environ: Mapping[str, str]) -> Any:
        """The value given by a parsed flag in `args`, else by the variable; None if neither. Raises ConfigError."""
        given = getattr(args, self.name, None)
        if given is not None and given != []:
            if self.kind is Kind.PATHS and isinstance(given, list):  # a repeated flag: argparse gives a list
                return tuple(Path(p) for p in given)
            return self.parse(given, self.flag) if isinstance(given, str) else given
        raw = environ.get(self.env, "")
        return self.parse(raw, self.env) if raw else None


def setting(
    flags: str | tuple[str, ...],
    env: str,
    default: T,
    parse: Parse[T],
    help: str,
    commands: Iterable[str],
    *,
    kind: Kind = Kind.VALUE,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    shown: str | None = None,
    help_in: Mapping[str, str] | None = None,
) -> T:
    """A field of Config (typed as its value) that is declared as a setting: see `Setting`."""
    declared = Setting(
        flags=(flags,) if isinstance(flags, str) else flags,
        env=env,
        default=default,
        parse=parse,
        help=help,
        commands=tuple(commands),
        kind=kind,
        metavar=metavar,
        choices=choices,
        shown=shown,
        help_in=dict(help_in or {}),
    )
    return dataclasses.field(default=default, metadata={"setting": declared})


def table(config_class: type) -> tuple[Setting[Any], ...]:
    """The settings declared by the fields of `config_class`, in their order, each named after its field."""
    return tuple(
        dataclasses.replace(field.metadata["setting"], name=field.name)
        for field in dataclasses.fields(config_class)
        if "setting" in field.metadata
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """Settings that go together: `message` when `broken(given)`, `given` the settings a flag or variable set."""

    message: str
    broken: Callable[[Mapping[str, Any]], bool]

    def check(self, given: Mapping[str, Any]) -> None:
        """Raises ConfigError with the message if the given settings break the rule."""
        if self.broken(given):
            raise ConfigError(self.message)


def markdown_row(declared: Setting[Any]) -> str:
    """The row of `declared` in the settings page's table."""
    doc = declared.help + "".join(f" (`{command}`: {text})" for command, text in declared.help_in.items())
    if declared.kind is Kind.PATHS:
        doc += f"; the variable separates several with `{os.pathsep}`"
    cells = (
        f"`{declared.name}`",
        ", ".join(f"`{flag}`" for flag in declared.all_flags()),
        f"`{declared.env}`",
        declared.shown_default() or "(none)",
        ", ".join(declared.commands),
        markdown(doc),
    )
    return "| " + " | ".join(cells) + " |"


def markdown(text: str) -> str:
    """`text` as Markdown: outside `code`, < > | * are escaped (<DIR> would read as HTML, *.json as emphasis)."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("*", "\\*")
    return "`".join(parts)


# -- parsers: (text, source) -> value, raising ConfigError that names the source -------------


def text(value: str, source: str) -> str:
    return value


def path(value: str, source: str) -> Path:
    return Path(value)


def paths(value: str, source: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in value.split(os.pathsep) if p)


def port(value: str, source: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise ConfigError(f"{source}: {value!r} is not a port number (0-65535)")
    return int(value)


def seconds(value: str, source: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0.1 <= number <= 3600:
        raise ConfigError(f"{source}: {value!r} is not a number of seconds from 0.1 to 3600")
    return number


def duration(value: str, source: str) -> float:
    """A duration as chart files write it (`90s`, `15m`, `24h`, `7d`), in seconds: from a minute to 30 days."""
    try:
        number = parse_duration(value).total_seconds()
    except ValueError:
        number = 0.0
    if not 60 <= number <= 30 * 86400:
        raise ConfigError(f"{source}: {value!r} is not a duration from 1m to 30d (e.g. 90m, 24h, 7d)")
    return number


def count(low: int, high: int) -> Parse[int]:
    def check(value: str, source: str) -> int:
        if not value.isdigit() or not low <= int(value) <= high:
            raise ConfigError(f"{source}: {value!r} is not a whole number from {low} to {high}")
        return int(value)

    return check


def size(value: str, source: str) -> int:
    units = {"": 1, "K": 1024, "KIB": 1024, "M": 1024 * 1024, "MIB": 1024 * 1024}
    number = value.rstrip("KkMmIiBb")
    unit = value[len(number) :].upper()
    if not number.isdigit() or unit not in units or not 1024 <= int(number) * units[unit] <= 1024**3:
        raise ConfigError(f"{source}: {value!r} is not a size from 1K to 1024M (bytes, or with a K or M suffix)")
    return int(number) * units[unit]


def switch(value: str, source: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    if value.lower() not in words:
        raise ConfigError(f"{source}: {value!r} is not one of on, off, true, false, yes, no, 1, 0")
    return words[value.lower()]


def zone(value: str, source: str) -> tzinfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{source}: {value!r} is not a time zone name such as UTC or Europe/Berlin") from None


def zone_name(value: str, source: str) -> str:
    return str(zone(value, source))


def replicas(value: str, source: str) -> int:
    if not value.isdigit() or int(value) > 100:
        raise ConfigError(f"{source}: {value!r} is not a number of replicas (0-100; 0 turns WAIT off)")
    return int(value)


def workers(value: str, source: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{source}: {value!r} is not a worker count (a whole number >= 1, or 'auto')")
    return int(value)


def processes(value: str, source: str) -> int:
    if not value.isdigit():
        raise ConfigError(f"{source}: {value!r} is not a process count (a whole number >= 0)")
    return int(value)


def public_url(value: str, source: str) -> str:
    """The service's own URL as others reach it: http(s), a host, no query (paths are appended)."""
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment
        ok = ok and (parts.port is None or parts.port >= 0)  # .port raises for a port that is no number
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{source}: {value!r} is not an http:// or https:// URL such as https://stateservice.example")
    return value.rstrip("/")


def redis_url(value: str, source: str) -> str:
    if sentinel.is_sentinel(value):
        try:
            sentinel.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {redact(value)!r}: {exc}") from None
        return value
    try:
        parts = urlsplit(value)
        scheme = parts.scheme if parts.port is None or parts.port >= 0 else ""  # .port raises for a bad port
    except ValueError:
        scheme = ""  # e.g. an unclosed [ or a port that is no number
    if scheme not in SCHEMES:
        raise ConfigError(f"{source}: {redact(value)!r} is not a redis://, rediss://, unix:// or redis+sentinel:// URL")
    return value


def event_loop(value: str, source: str) -> str:
    chosen = choice(EVENT_LOOPS)(value, source)
    if chosen == "uvloop" and not uvloop_available():
        raise ConfigError(f"{source}: uvloop is not installed here (pip install uvloop), use auto or asyncio")
    return chosen


def choice(options: tuple[str, ...]) -> Parse[str]:
    """A parser accepting one of `options`."""

    def check(value: str, source: str) -> str:
        if value not in options:
            raise ConfigError(f"{source}: {value!r} is not one of {', '.join(options)}")
        return value

    return check
