"""Job configs: JSON files validated on load (unknown or missing fields and wrong types are
errors; params are typed by the algorithm's constructor, see ``paracel.params``)."""
from __future__ import annotations

import inspect
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from paracel.errors import ConfigError
from paracel.importing import NotImportable, import_by_name, is_import_name
from paracel.params import Mismatch, conform

FIELDS = {"algorithm", "params", "staleness", "output", "cache", "description", "request_timeout",
          "checkpoint_every", "resume"}
#: Seconds a worker waits for a server's reply before the job fails (``request_timeout``).
DEFAULT_REQUEST_TIMEOUT = 600.0


@dataclass
class JobConfig:
    """A validated job config.

    ``algorithm`` is ``"module:Class"`` (a ``paralg`` subclass), ``params`` its constructor's
    keyword arguments, ``staleness`` the SSP bound (0 = BSP, None = asynchronous), ``output``
    the output folder, ``cache`` whether workers may serve reads from their SSP cache,
    ``request_timeout`` the seconds a worker waits for a server's reply before the job fails
    (None: for ever; the clock rank's replies, which wait for slower workers, have no limit),
    ``checkpoint_every`` the clocks between automatic checkpoints (None: only on demand), and
    ``resume`` the checkpoint folder a resumed job starts from (set by ``prun --resume``).
    """

    algorithm: str
    params: dict[str, Any] = field(default_factory=dict)
    staleness: int | None = 0
    output: str = "out"
    cache: bool = True
    description: str = ""
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    checkpoint_every: int | None = None
    resume: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def load_config(source: str | Path | dict[str, Any], overrides: Iterable[str] = ()) -> JobConfig:
    """Read and validate a config (a JSON file or a dict), applying ``KEY=VALUE`` overrides
    (``KEY`` a field or ``params.NAME``; ``VALUE`` JSON, else a plain string).

    ``params`` come back as the constructor takes them (see :func:`conform_params`).
    Raises ``ConfigError`` naming the file and the field at fault.
    """
    where = str(source) if not isinstance(source, dict) else "<config dict>"
    if isinstance(source, dict):
        raw = json.loads(json.dumps(source))
    else:
        try:
            raw = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such config file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the config must be a JSON object")
    for item in overrides:
        _apply_override(raw, item, where)
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")
    if "algorithm" not in raw:
        raise ConfigError(f"{where}: missing field 'algorithm' (\"module:Class\")")
    if "output" not in raw and not isinstance(source, dict):
        raw["output"] = str(Path("out") / Path(source).stem)
    config = JobConfig(**raw)
    _check_types(config, where)
    config.params = conform_params(resolve_algorithm(config.algorithm, where), config.params, where)
    return config



def read_resolved(path: str | Path) -> JobConfig:
    """The config that ``paracel.launch.prepare`` validated and wrote, as every rank reads it.

    It is not checked again: the launcher did that before any rank started, and a rank on a
    host without the input files (a server, the clock) must not fail a check it has no use for.
    """
    return JobConfig(**json.loads(Path(path).read_text(encoding="utf-8")))

def _apply_override(raw: dict[str, Any], item: str, where: str) -> None:
    name, sep, text = item.partition("=")
    if not sep or not name:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if name.startswith("params."):
        params = raw.setdefault("params", {})
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: field 'params' must be an object")
        params[name[len("params."):]] = value
    else:
        raw[name] = value


def _check_types(config: JobConfig, where: str) -> None:
    checks = [
        ("algorithm", is_import_name(config.algorithm), 'a "module:Class" string'),
        ("params", isinstance(config.params, dict), "an object"),
        ("staleness", config.staleness is None or (type(config.staleness) is int and config.staleness >= 0),
         "an integer >= 0, or null for asynchronous"),
        ("output", isinstance(config.output, str) and config.output != "", "a folder path"),
        ("cache", isinstance(config.cache, bool), "true or false"),
        ("description", isinstance(config.description, str), "a string"),
        ("request_timeout", config.request_timeout is None or (type(config.request_timeout) in (int, float)
                                                               and config.request_timeout > 0),
         "a number of seconds > 0, or null to wait for ever"),
        ("checkpoint_every", config.checkpoint_every is None or (type(config.checkpoint_every) is int
                                                                 and config.checkpoint_every >= 1),
         "an integer >= 1 (clocks), or null for checkpoints on demand only"),
        ("resume", config.resume is None or isinstance(config.resume, str), "a checkpoint folder, or null"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{where}: field {name!r} must be {expected}, got {getattr(config, name)!r}")


def resolve_algorithm(spec: str, where: str = "config") -> type:
    """Import the ``paralg`` subclass named ``"module:Class"``; raises ``ConfigError``."""
    from paracel.paralg import paralg

    try:
        cls = import_by_name(spec)
    except NotImportable as exc:
        raise ConfigError(f"{where}: field 'algorithm': {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, paralg)):
        raise ConfigError(f"{where}: field 'algorithm': {spec!r} is not a paracel.paralg subclass")
    return cls


def conform_params(cls: type, params: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``params`` checked against the keyword arguments of ``cls.__init__``: their names, and
    their values against the annotations (``paracel.params.conform``); returns the values as the
    constructor takes them (an int given for a float param becomes a float).

    Raises ``ConfigError`` naming ``params.NAME``, and for a value the expected type and the value.
    """
    signature = inspect.signature(cls.__init__)
    accepted = {n: p for n, p in list(signature.parameters.items())[1:]
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(params) - set(accepted))
    if unknown and not takes_any:
        raise ConfigError(f"{where}: unknown field 'params.{unknown[0]}' for {cls.__name__} "
                          f"(accepted: {', '.join(accepted) or 'none'})")
    missing = [n for n, p in accepted.items() if p.default is p.empty and n not in params]
    if missing:
        raise ConfigError(f"{where}: missing field 'params.{missing[0]}' for {cls.__name__}")
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception as exc:  # a bad annotation is the algorithm's bug; name it, do not guess
        raise ConfigError(f"{where}: field 'algorithm': cannot read the parameter annotations of "
                          f"{cls.__name__}: {type(exc).__name__}: {exc}") from None
    conformed = {}
    for name, value in params.items():
        try:
            conformed[name] = conform(value, hints.get(name, Any))
        except Mismatch as exc:
            raise ConfigError(f"{where}: field 'params.{name}{exc.path}' {exc}") from None
        except TypeError as exc:  # the annotation itself is at fault
            raise ConfigError(f"{where}: field 'algorithm': {cls.__name__} cannot check "
                              f"'params.{name}': {exc}") from None
    return conformed
