"""``check-config`` for BOSS sources: every source readable, every document valid, every class importable.

Sources are read here (the host); classes and decorators are imported in a child interpreter,
as for hosted objects, because importing a HERO's module may import zenoh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from boss_sidecar.boss_sources import read_source, sources_from
from boss_sidecar.config import BossSpec, CheckFailed, check_in_child


@dataclass(slots=True)
class BossReport:
    """The HEROs the sources name, and everything wrong with them, each naming source and ``_id``."""

    heroes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_boss_sources(spec: BossSpec) -> BossReport:
    """Read every source of ``spec`` and check what it holds, without starting anything."""
    report = BossReport()
    classes: dict[str, str] = {}
    objects: dict[str, str] = {}
    for source in sources_from(spec.urls, spec.env):
        documents = read_source(source)
        report.problems += documents.problems
        for hero_id, document in documents.documents.items():
            if hero_id in report.heroes:
                report.problems.append(f"{documents.source}: _id {hero_id!r} is also in an earlier source")
                continue
            report.heroes.append(hero_id)
            where = f"{documents.source}: _id {hero_id!r}"
            classes[f"{where}: classname"] = document["classname"]
            for method, decorator in document.get("extra_decorators", []):
                objects[f"{where}: extra_decorators {method}"] = decorator
    if classes or objects:
        try:
            errors = check_in_child({"classes": classes, "objects": objects})
        except CheckFailed as exc:
            report.problems.append(f"could not check the HERO classes: {exc}")
        else:
            report.problems += [f"{key}: {message}" for key, message in errors.items()]
    return report
