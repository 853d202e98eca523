"""Click options made from a settings class, so a flag's name, help and default are written once.

:func:`settings_options` turns every field of a pydantic model or pydantic
dataclass (:mod:`flows.settings`) into an option: ``--field-name`` (or the
field's ``flag`` extra), its description as help, its default shown; nested
settings (``yin``) are flattened into their own fields' flags.  :func:`make`
builds the settings object back from the parsed values; a value pydantic
refuses becomes one line naming the flag (:class:`Refused`, exit 2).

Click rather than Typer: the options are generated from the settings at
import time, and Click takes option objects directly where Typer wants a
function signature (Typer is built on Click, so completion is the same).
"""

from __future__ import annotations

import types
import typing
from typing import Literal, get_args, get_origin

import click
from pydantic import BaseModel, ValidationError


class Refused(Exception):
    """Bad input, found before any work: one line on stderr and exit code 2."""


class Size(click.ParamType):
    """``WIDTHxHEIGHT`` in whole pixels (``1920x1080``)."""

    name = "WxH"

    def convert(self, value, param, ctx):
        from tasks.datasets.manifest import check_crop_reference

        if isinstance(value, tuple):
            return value
        try:
            w, h = str(value).lower().split("x")
            return check_crop_reference((int(w), int(h)))
        except ValueError:
            self.fail(f"{value!r} is not WIDTHxHEIGHT in whole pixels, e.g. 1920x1080", param, ctx)


class InputPath(click.ParamType):
    """A file or folder that must exist, unless it is a URL (``s3://...``), which the task reads itself."""

    name = "PATH"

    def convert(self, value, param, ctx):
        from pathlib import Path
        from urllib.parse import urlparse

        if urlparse(str(value)).scheme in ("", "file") and not Path(str(value).removeprefix("file://")).exists():
            self.fail(f"no such file or folder: {value}", param, ctx)
        return value


def _fields(cls) -> dict:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return cls.model_fields
    return cls.__pydantic_fields__  # a pydantic dataclass


def _is_settings(annotation) -> bool:
    return isinstance(annotation, type) and (issubclass(annotation, BaseModel)
                                            or hasattr(annotation, "__pydantic_fields__"))


def _leaves(cls, prefix: tuple[str, ...] = ()):
    """``(path, field)`` for every field of ``cls``, nested settings flattened."""
    for name, field in _fields(cls).items():
        if _is_settings(field.annotation):
            yield from _leaves(field.annotation, prefix + (name,))
        else:
            yield prefix + (name,), field


def flag(name: str, field) -> str:
    return "--" + ((field.json_schema_extra or {}).get("flag") or name.replace("_", "-"))


def _click_type(annotation, field=None):
    if (field.json_schema_extra or {}).get("input") if field is not None else False:
        return InputPath()
    origin, args = get_origin(annotation), [a for a in get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):  # X | None
        return _click_type(args[0])
    if origin is Literal:
        return click.Choice([str(a) for a in args])
    if origin is tuple:
        return Size()
    if origin is list:  # a repeated flag (multiple=True, see settings_options)
        return _click_type(args[0], field)
    return {int: click.INT, float: click.FLOAT, str: click.STRING}[annotation]


def settings_options(cls, only: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
    """A decorator adding ``cls``'s fields (those in ``only``, if given, less ``exclude``) as options."""
    def decorate(command):
        leaves = sorted(_leaves(cls), key=lambda leaf: not leaf[1].is_required())  # required ones first
        for path, field in reversed(leaves):
            name = path[-1]
            if (only and name not in only) or name in exclude:
                continue
            dest, opt = "__".join(path), flag(name, field)
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            if field.annotation is bool:
                decls, extra = [f"{opt}/--no-{opt[2:]}", dest], {}
            else:
                decls = [opt, dest]
                extra = {"type": _click_type(field.annotation, field), "required": field.is_required(),
                         "multiple": get_origin(field.annotation) is list}
            shown = "x".join(map(str, default)) if isinstance(default, tuple) else (default is not None
                                                                                    and default is not False)
            command = click.option(*decls, default=default, show_default=shown,
                                   help=field.description or "", **extra)(command)
        return command
    return decorate


def make(cls, params: dict, **fixed):
    """``cls`` from a command's parsed ``params`` (those it has no field for are ignored) and ``fixed``."""
    data: dict = {}
    flags = {}
    for path, field in _leaves(cls):
        flags[path] = flag(path[-1], field)
        dest = "__".join(path)
        if dest in params:
            inner = data
            for part in path[:-1]:
                inner = inner.setdefault(part, {})
            value = params[dest]
            listed = isinstance(value, tuple) and get_origin(field.annotation) is list
            inner[path[-1]] = list(value) if listed else value
    data.update(fixed)
    try:
        return cls(**data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(str(p) for p in error["loc"])
        where = next((flags[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in flags), "")
        message = str(error["msg"]).removeprefix("Value error, ")
        raise Refused(f"{where}: {message}" if where else message) from None
