"""Launcher configuration: every kind of error is named with file, table and field, all at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from boss_sidecar.config import POLICY_KEYS, ConfigProblems, LauncherConfig, heros_boss_installed, load_config
from boss_sidecar.errors import ConfigError
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.testing import peer_config
from test_cli import CLI, toml_value

LOOPBACK = f"zenoh = {toml_value(peer_config())}"


def write(tmp_path: Path, text: str, name: str = "sidecars.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problems load_config reports for ``text``, each as printed."""
    with pytest.raises(ConfigProblems) as caught:
        load_config(write(tmp_path, text))
    return [str(problem) for problem in caught.value.problems]


def only_problem(tmp_path: Path, text: str) -> str:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------- valid files
def test_a_valid_file_gives_one_spec_per_table(tmp_path: Path) -> None:
    """Each [sidecars.NAME] table becomes a spec: zenoh, policy fields and BOSS object documents."""
    config = load_config(
        write(
            tmp_path,
            f"""
            [sidecars.one]
            {LOOPBACK}
            restart = "always"
            max_rss_mb = 200
            [[sidecars.one.objects]]
            _id = "counter"
            classname = "boss_sidecar.demo:Counter"
            arguments = {{ start = 3 }}
            [sidecars.two]
            """,
        )
    )
    assert isinstance(config, LauncherConfig)
    assert list(config.sidecars) == ["one", "two"]
    one = config.sidecars["one"]
    assert one.policy == SidecarPolicy(restart="always", max_rss_mb=200)
    assert one.objects == ({"_id": "counter", "classname": "boss_sidecar.demo:Counter", "arguments": {"start": 3}},)
    assert isinstance(one.zenoh, dict) and one.zenoh["mode"] == "peer"
    assert config.sidecars["two"].zenoh is None and config.sidecars["two"].policy == SidecarPolicy()


def test_a_zenoh_file_path_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zenoh = "x.json5" is found beside the config file, whatever the working directory."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "peer.json5").write_text(json.dumps(peer_config()))
    path = write(tmp_path, '[sidecars.a]\nzenoh = "peer.json5"\n', "conf/sidecars.toml")
    monkeypatch.chdir(tmp_path)
    spec = load_config(path).sidecars["a"]
    assert spec.zenoh == str((tmp_path / "conf" / "peer.json5").resolve())


def test_editing_the_zenoh_file_changes_the_spec(tmp_path: Path) -> None:
    """A reload compares specs: a json5 file with new content makes a different spec, the same one an equal spec."""
    (tmp_path / "peer.json5").write_text(json.dumps(peer_config()))
    path = write(tmp_path, '[sidecars.a]\nzenoh = "peer.json5"\n')
    before, again = load_config(path).sidecars["a"], load_config(path).sidecars["a"]
    assert before == again
    (tmp_path / "peer.json5").write_text(json.dumps(peer_config()))
    assert load_config(path).sidecars["a"] != before


def test_the_embedded_default_is_valid_and_stays_on_loopback() -> None:
    """The default config: one demo sidecar, a peer on 127.0.0.1 with scouting off."""
    config = load_config(None)
    assert list(config.sidecars) == ["demo"]
    zenoh = config.sidecars["demo"].zenoh
    assert isinstance(zenoh, dict)
    assert all(endpoint.startswith("tcp/127.0.0.1:") for endpoint in zenoh["listen"]["endpoints"])
    assert zenoh["scouting"] == {"multicast": {"enabled": False}, "gossip": {"enabled": False}}
    assert config.sidecars["demo"].objects[0]["classname"] == "boss_sidecar.demo:Counter"


@pytest.mark.parametrize(
    ("files", "installed"), [(["__init__.py", "configuration.py"], True), (["__init__.py"], False)]
)
def test_heros_boss_is_found_by_its_factory_module_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: list[str], installed: bool
) -> None:
    """A package ``boss`` counts as heros-boss only with the factory's module; nothing of it is imported."""
    package = tmp_path / "boss"
    package.mkdir()
    for name in files:
        (package / name).write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "boss", raising=False)
    assert heros_boss_installed() is installed
    assert "boss" not in sys.modules


# ----------------------------------------------------------------- one test per kind of error
def test_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is named with the reason."""
    with pytest.raises(ConfigProblems, match=r"nope\.toml: cannot read: No such file or directory"):
        load_config(tmp_path / "nope.toml")


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    """tomllib's message with line and column."""
    assert "not valid TOML" in (text := only_problem(tmp_path, "[sidecars.a]\nrestart = \n")) and "line 2" in text


def test_unknown_top_level_key(tmp_path: Path) -> None:
    """Only [sidecars.*] tables and [boss] belong at the top."""
    found = problems(tmp_path, "colour = 'blue'\n[sidecars.a]\n")
    assert found == [
        f"{tmp_path / 'sidecars.toml'}: colour: unknown key; expected one of: sidecars, boss"
        " (each sidecar is a [sidecars.NAME] table)"
    ]


def test_no_sidecars(tmp_path: Path) -> None:
    """An empty file (or an empty [sidecars] table) runs nothing: an error, not a silent no-op."""
    assert only_problem(tmp_path, "").endswith(
        "sidecars: expected a [boss] table or at least one [sidecars.NAME] table, found none"
    )
    assert "expected at least one" in only_problem(tmp_path, "[sidecars]\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sidecars = 3", "sidecars: expected a table of sidecar tables, found an integer 3"),
        ("[sidecars]\na = 'x'", '[sidecars] a: expected a table, found a string "x"'),
        (
            "[sidecars.a]\nzenoh = 3",
            "[sidecars.a] zenoh: expected a table (zenoh configuration) or a string (json5 file path),"
            " found an integer 3",
        ),
        (
            "[sidecars.a]\nzenoh = 'missing.json5'",
            "[sidecars.a] zenoh: expected a readable json5 file, found 'missing.json5' (No such file or directory)",
        ),
        (
            "[sidecars.a]\nobjects = 'x'",
            '[sidecars.a] objects: expected an array of tables ([[sidecars.a.objects]]), found a string "x"',
        ),
        (
            "[sidecars.a]\nobjects = [1]",
            "[sidecars.a.objects[0]]: expected a table {_id, classname, arguments}, found an integer 1",
        ),
    ],
)
def test_wrong_kinds_of_value_say_what_was_expected_and_found(tmp_path: Path, text: str, expected: str) -> None:
    """A value of the wrong kind (or a path that is not there) names table, field, expectation and find."""
    assert only_problem(tmp_path, text + "\n") == f"{tmp_path / 'sidecars.toml'}: {expected}"


def test_unknown_sidecar_key_suggests_the_right_one(tmp_path: Path) -> None:
    """A typo of a policy field is an error with a suggestion, not a silently ignored key."""
    text = only_problem(tmp_path, "[sidecars.a]\nhearbeat_timeout = 3\n")
    assert "[sidecars.a] hearbeat_timeout: unknown key (did you mean 'heartbeat_timeout'?)" in text
    assert "expected one of: zenoh, objects, restart," in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("restart = 'sometimes'", "restart: must be one of never, on-failure, always, got 'sometimes'"),
        ("log_level = 'verbose'", "log_level: must be one of debug, info, warning, error, critical, got 'verbose'"),
        ("heartbeat_timeout = -1", "heartbeat_timeout: must be positive, got -1"),
        ("heartbeat_interval = 0", "heartbeat_interval: must be positive, got 0"),
        ("call_timeout = 'soon'", "call_timeout: must be a number, got 'soon'"),
        ("max_rss_mb = true", "max_rss_mb: must be a number, got True"),
        ("max_restarts = 2.5", "max_restarts: must be a whole number, got 2.5"),
        ("backoff_jitter = 1.5", "backoff_jitter: must be below 1, got 1.5"),
        ("busy_wait = -0.001", "busy_wait: must be 0 or more, got -0.001"),
        ("busy_wait = 1", "busy_wait: must be at most 0.01 s (it burns CPU), got 1"),
    ],
)
def test_policy_fields_are_checked_by_sidecar_policy(tmp_path: Path, line: str, expected: str) -> None:
    """Each SidecarPolicy field is validated by SidecarPolicy itself, named with its table."""
    assert only_problem(tmp_path, f"[sidecars.a]\n{line}\n").endswith(f"[sidecars.a] {expected}")


def test_every_policy_field_is_a_known_key(tmp_path: Path) -> None:
    """The accepted keys are the SidecarPolicy fields, so a new field needs no change here."""
    lines = "\n".join(f"{name} = {toml_value(getattr(SidecarPolicy(), name) or 1)}" for name in POLICY_KEYS)
    assert load_config(write(tmp_path, f"[sidecars.a]\n{lines}\n")).sidecars["a"].policy.max_rss_mb == 1


def test_zenoh_with_a_date_is_refused(tmp_path: Path) -> None:
    """TOML dates cannot travel as a zenoh configuration."""
    text = only_problem(tmp_path, "[sidecars.a]\nzenoh = { id = 1979-05-27 }\n")
    assert "[sidecars.a] zenoh: expected plain values" in text


def test_invalid_zenoh_configuration_inline_and_in_a_file(tmp_path: Path) -> None:
    """zenoh itself checks the configurations (in a child process): its message is passed on."""
    (tmp_path / "bad.json5").write_text('{ mode: "peerx" }')
    found = problems(tmp_path, "[sidecars.a]\nzenoh = { modee = 'peer' }\n[sidecars.b]\nzenoh = 'bad.json5'\n")
    assert len(found) == 2
    assert "[sidecars.a] zenoh: invalid zenoh configuration: unknown field `modee`" in found[0]
    assert "[sidecars.b] zenoh: invalid zenoh configuration:" in found[1] and "peerx" in found[1]


def test_object_fields(tmp_path: Path) -> None:
    """Unknown keys, a missing or mistyped classname, a mistyped or repeated _id, arguments not a table."""
    found = problems(
        tmp_path,
        """
        [[sidecars.a.objects]]
        classname = "boss_sidecar.demo:Counter"
        _id = "x"
        colour = 1
        [[sidecars.a.objects]]
        _id = 5
        arguments = [1]
        [[sidecars.a.objects]]
        classname = 7
        [[sidecars.a.objects]]
        classname = "boss_sidecar.demo:Counter"
        _id = "x"
        """,
    )
    assert [text.split(": ", 1)[1] for text in found] == [
        "[sidecars.a.objects[0]] colour: unknown key; expected one of: _id, classname, arguments",
        "[sidecars.a.objects[1]] classname: missing; expected 'package.module:Class'",
        "[sidecars.a.objects[1]] _id: expected a string, found an integer 5",
        "[sidecars.a.objects[1]] arguments: expected a table of keyword arguments, found an array",
        "[sidecars.a.objects[2]] classname: expected a string 'package.module:Class', found an integer 7",
        "[sidecars.a.objects[3]] _id: expected a unique name, found 'x' again",
    ]


def test_classnames_that_cannot_be_imported(tmp_path: Path) -> None:
    """A missing module or class is found before anything starts (imported in a child process)."""
    found = problems(
        tmp_path,
        """
        [[sidecars.a.objects]]
        classname = "no_such_module:Thing"
        [[sidecars.a.objects]]
        classname = "boss_sidecar.demo:NoSuchClass"
        [[sidecars.a.objects]]
        classname = "Counter"
        """,
    )
    assert (
        "[sidecars.a.objects[0]] classname: cannot host 'no_such_module:Thing': module 'no_such_module' not importable"
        in found[0]
    )
    assert "[sidecars.a.objects[1]] classname: cannot host 'boss_sidecar.demo:NoSuchClass'" in found[1]
    assert found[1].endswith("'boss_sidecar.demo' has no 'NoSuchClass'")
    assert "[sidecars.a.objects[2]] classname: classname 'Counter' must look like 'package.module:Class'" in found[2]


def test_all_errors_are_reported_at_once_grouped_by_sidecar(tmp_path: Path) -> None:
    """Problems of several kinds in several tables come together, in file order of the tables."""
    text = """
        [sidecars.a]
        zenoh = { mode = "peerx" }
        restart = "sometimes"
        [[sidecars.a.objects]]
        classname = "no_such_module:Thing"
        [sidecars.b]
        heartbeat_timeout = -1
        bogus = 1
        """
    with pytest.raises(ConfigProblems) as caught:
        load_config(write(tmp_path, text))
    assert [(problem.table, problem.field) for problem in caught.value.problems] == [
        ("sidecars.a", "restart"),
        ("sidecars.a", "zenoh"),
        ("sidecars.a.objects[0]", "classname"),
        ("sidecars.b", "bogus"),
        ("sidecars.b", "heartbeat_timeout"),
    ]


def test_config_problems_are_config_errors_with_a_readable_summary(tmp_path: Path) -> None:
    """ConfigProblems is a ConfigError; its text counts the errors and lists one per line."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[sidecars.a]\nrestart = 1\nstop_timeout = 0\n"))
    lines = str(caught.value).splitlines()
    assert lines[0] == f"2 errors in {tmp_path / 'sidecars.toml'}:"
    assert len(lines) == 3 and all(line.startswith("  ") for line in lines[1:])


# ----------------------------------------------------------------- the command
def test_check_config_exit_0_for_a_valid_file(tmp_path: Path) -> None:
    """check-config says ok and names the sidecars."""
    path = write(tmp_path, f"[sidecars.a]\n{LOOPBACK}\n[sidecars.b]\n")
    done = subprocess.run([CLI, "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"{path}: ok (2 sidecars: a, b)")


def test_check_config_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    """check-config prints all problems on stderr and exits nonzero; nothing is started."""
    path = write(tmp_path, "[sidecars.a]\nrestart = 'x'\nbogus = 1\n[[sidecars.a.objects]]\nclassname = 'nope:X'\n")
    done = subprocess.run([CLI, "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"3 errors in {path}:"
    assert "bogus: unknown key" in lines[1] and "restart: must be one of" in lines[2] and "nope:X" in lines[3]
