"""The Python 3 app SDK: run one method of one app and print ELVES' tags.

The ELVES worker contract: the agent starts `<entry> <app> <func> <base64(json params)>`, the
entry being `python <apps_dir>/<app>/app-worker.py` by default. That script is two lines that call
`main()`. The app folder holds `<app>.py` with a class `<app>` whose methods take the params dict
and return `(flag, result)`, flag "true" or "false". An exception becomes ("false", traceback).

`main()` finds the app beside `sys.argv[0]`, so the same app-worker.py runs unchanged under a
fresh interpreter or in a child of the agent's fork server.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import json
import os
import sys
import traceback
from importlib.machinery import ModuleSpec, SourceFileLoader
from json.scanner import make_scanner
from types import CodeType, ModuleType

# typing.TYPE_CHECKING without importing typing (mypy reads any name TYPE_CHECKING so).
TYPE_CHECKING = False

if TYPE_CHECKING:  # not at run time: a task forked from the agent's server copies every page
    # its imports hold (pathlib and typing were a sixth of that server's memory)
    from pathlib import Path
    from typing import Any

_JSON_SPACE = " \t\n\r"  # json's whitespace
FLAG_TRUE = "true"
FLAG_FALSE = "false"
USAGE = "usage: app-worker.py <app> <func> [base64(json params)]"

# App modules already compiled, by path: the agent's fork server puts the task's own here in
# the forked child, so the task runs the module without reading and unmarshalling it (that
# was a fifth of a noop task process's CPU). Empty in a plain `python app-worker.py`.
PRECOMPILED: dict[str, CodeType] = {}
# The folder of each entry script, links resolved, by the path it was run as: the fork server
# puts the task's here too, so the child does not resolve it again.
HOMES: dict[str, str] = {}
# json's C scanner, called without json.loads's Python frames: in a forked task every object
# touched costs a page copy (see PRECOMPILED).
_SCAN = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed: a context object


def render(flag: str, result: str) -> str:
    """The two tags the agent parses from stdout."""
    return f"<ElvesWFlag>{flag}</ElvesWFlag><ElvesWResult>{result}</ElvesWResult>"


def decode_params(encoded: str) -> dict[str, Any]:
    """base64 of a JSON object -> dict; an empty argument is no params."""
    if not encoded:
        return {}
    try:
        # base64.b64decode(encoded, validate=True), without its frames.
        text = binascii.a2b_base64(encoded, strict_mode=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"params are not base64 of UTF-8 text: {exc}") from exc
    params = json_value(text) if text.strip() else {}
    if not isinstance(params, dict):
        raise TypeError(f"params must be a JSON object, not {type(params).__name__}")
    return params


def json_value(text: str) -> Any:
    """json.loads(text) for a str, through the C scanner it calls (see `_SCAN`)."""
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        value, end = _SCAN(text, start)
    except StopIteration as exc:  # what the scanner raises for no value at all
        raise json.JSONDecodeError("Expecting value", text, exc.value) from None
    rest = text[end:].lstrip(_JSON_SPACE)
    if rest:
        raise json.JSONDecodeError("Extra data", text, len(text) - len(rest))
    return value


def encode_params(params: dict[str, Any] | str) -> str:
    """The inverse of `decode_params`, for callers and tests; a str is taken as JSON text."""
    text = params if isinstance(params, str) else json.dumps(params)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def load_app(app_dir: Path | str, app: str) -> ModuleType:
    """Import `<app_dir>/<app>.py` as module `app`, with its folder first on sys.path.

    The module runs here, in this process, every time; only its compiling may have been done
    already (see `PRECOMPILED`)."""
    folder = str(app_dir)
    path = os.path.join(folder, f"{app}.py")
    code = PRECOMPILED.get(path)
    if code is None and not os.path.isfile(path):
        raise FileNotFoundError(f"app module {path} not found")
    if not sys.path or sys.path[0] != folder:
        # The app may import helper modules that sit beside it.
        sys.path.insert(0, folder)
    if code is None:
        spec = importlib.util.spec_from_file_location(app, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[app] = module
        spec.loader.exec_module(module)
        return module
    # What spec_from_file_location and module_from_spec make, without their frames (see
    # PRECOMPILED): the same spec, loader and module attributes, `__cached__` aside.
    loader = SourceFileLoader(app, path)
    spec = ModuleSpec(app, loader, origin=path)
    spec.has_location = True
    module = ModuleType(app)
    module.__spec__ = spec
    module.__loader__ = loader
    module.__package__ = ""
    module.__file__ = path
    sys.modules[app] = module
    exec(code, module.__dict__)  # noqa: S102 - what exec_module does once it has the code
    return module


def _normalise(returned: object) -> tuple[str, str]:
    if not isinstance(returned, tuple | list) or len(returned) != 2:
        return FLAG_FALSE, f"the method must return (flag, result), not {returned!r}"
    flag, result = returned
    if isinstance(flag, bool):
        flag = FLAG_TRUE if flag else FLAG_FALSE
    flag = str(flag).strip().lower()
    if flag not in (FLAG_TRUE, FLAG_FALSE):
        return FLAG_FALSE, f"the flag must be 'true' or 'false', not {flag!r}; result: {result}"
    return flag, "" if result is None else str(result)


def call(app_dir: Path | str, app: str, func: str, encoded_params: str) -> tuple[str, str]:
    """Run `<app>().<func>(params)`; any Exception becomes ("false", traceback).

    SystemExit and KeyboardInterrupt are not caught: an app that exits gets its exit code.
    """
    if func.startswith("_"):
        return FLAG_FALSE, f"{func!r} is private; only public methods can be called"
    try:
        params = decode_params(encoded_params)
        module = load_app(app_dir, app)
        instance = getattr(module, app)()
        method = getattr(instance, func)
        return _normalise(method(params))
    except Exception:  # noqa: BLE001 - the contract: any app error is reported, not raised
        return FLAG_FALSE, traceback.format_exc()


def main(argv: list[str] | None = None) -> None:
    """Entry point of every app-worker.py; argv defaults to sys.argv."""
    args = sys.argv if argv is None else argv
    if len(args) < 3:
        sys.stderr.write(USAGE + "\n")
        raise SystemExit(2)
    # os.path, not pathlib: in a task forked from the agent's warm server every object the
    # child touches costs a page copy, and pathlib touched twice as many.
    app_dir = HOMES.get(args[0]) or os.path.dirname(os.path.realpath(args[0]))
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A line printed reaches the agent as it is printed, not at exit: the agent streams the
        # task's output to the center while it runs (a pipe is block-buffered otherwise).
        sys.stdout.reconfigure(line_buffering=True)
    flag, result = call(app_dir, args[1], args[2], args[3] if len(args) > 3 else "")
    sys.stdout.write(render(flag, result))
    sys.stdout.flush()
