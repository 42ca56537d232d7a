"""``python -m boss_sidecar.worker.check``: validate zenoh configurations and classnames.

``boss-sidecar check-config`` (and ``run``, before starting anything) needs zenoh to parse a
zenoh configuration and an import to find a hosted class; neither may happen in the host, so
this runs in a fresh interpreter like a worker. It reads one JSON request on stdin,
``{"zenoh": {key: [source, value]}, "classes": {key: classname}, "objects": {key: "module.name"}}``
(``objects``: anything importable, such as a BOSS document's decorators), and writes the answer,
``{key: error text}`` for each that failed, as the last line on stdout.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import zenoh

from boss_sidecar.worker.hosting import load_class


def check(request: dict[str, Any]) -> dict[str, str]:
    """Errors by key; what is not named passed."""
    errors: dict[str, str] = {}
    for key, (source, value) in request.get("zenoh", {}).items():
        try:
            if source == "file":
                zenoh.Config.from_file(value)
            else:
                zenoh.Config.from_json5(value)
        except Exception as exc:
            errors[key] = f"invalid zenoh configuration: {exc}"
    for key, classname in request.get("classes", {}).items():
        try:
            load_class(classname)
        except Exception as exc:
            errors[key] = str(exc)
    for key, path in request.get("objects", {}).items():
        module_name, _, name = path.rpartition(".")
        try:
            getattr(importlib.import_module(module_name), name)
        except Exception as exc:
            errors[key] = f"cannot import {path!r}: {type(exc).__name__}: {exc}"
    return errors


def main() -> None:
    request = json.load(sys.stdin)
    answer_to = sys.stdout
    sys.stdout = sys.stderr  # what imported modules print must not garble the answer
    answer = check(request)
    answer_to.write("\n" + json.dumps(answer) + "\n")
    answer_to.flush()


if __name__ == "__main__":
    main()
