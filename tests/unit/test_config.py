"""Both daemons' config files (issue 7): strict versioned TOML, errors that name the
key's path, ``--check-config`` exit codes, and defaults documented in one place.

The module docstrings of coordinator/config.py and noded/config.py are the
commented examples; docs/config.md is generated from the Structs by
``tide config reference`` and must be current.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

import coordinator.config as coordinator_config
import noded.config as noded_config
from tide.api.errors import InvalidArgument
from tide.cli._ops import _keys, render_reference, to_toml

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES = {"coordinator": coordinator_config, "noded": noded_config}
DAEMON_MAIN = {"coordinator": "coordinator.main", "noded": "noded.main"}


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _error(module: ModuleType, path: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        module.load_config(path)
    return info.value.message


# -- strictness and paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("daemon", "text", "path"),
    [
        ("coordinator", "[jobs]\nclaim-grace = 3\n", "`$.jobs.claim-grace`"),
        ("coordinator", "listen = 1\n", "`$.listen`"),
        ("coordinator", "[server]\nlisten_addr = 'x'\n", "`$.server.listen_addr`"),
        ("noded", "[gpus]\nsourc = 'nvml'\n", "`$.gpus.sourc`"),
        (
            "noded",
            "[runtime.registries.'r.io']\npasword-file = 'x'\n",
            "`$.runtime.registries[...].pasword-file`",  # msgspec does not name table keys
        ),
    ],
)
def test_config_unknown_key_names_its_path(tmp_path: Path, daemon: str, text: str, path: str) -> None:
    message = _error(MODULES[daemon], _write(tmp_path, text))
    assert f"unknown key {path}" in message
    assert str(tmp_path) in message  # and the file


@pytest.mark.parametrize(
    ("daemon", "text", "path", "expected"),
    [
        ("coordinator", "[server]\nlisten = 8420\n", "$.server.listen", "str"),
        ("coordinator", "[jobs]\ninline-limit = 'big'\n", "$.jobs.inline-limit", "int"),
        ("coordinator", "[prices]\nH100 = 'cheap'\n", "$.prices[...]", "float"),
        ("coordinator", "jobs = 3\n", "$.jobs", "object"),
        ("noded", "[runtime]\nkind = 'docker'\n", "$.runtime.kind", "enum"),
        ("noded", "[flashboot]\nram-budget-gb = true\n", "$.flashboot.ram-budget-gb", "float"),
        ("noded", "[mig]\npool = [0, -1]\n", "$.mig.pool[1]", ">= 0"),
    ],
)
def test_config_wrong_type_names_its_path(
    tmp_path: Path, daemon: str, text: str, path: str, expected: str
) -> None:
    message = _error(MODULES[daemon], _write(tmp_path, text))
    assert f"`{path}`" in message
    assert expected in message


@pytest.mark.parametrize("daemon", MODULES)
@pytest.mark.parametrize(("version", "says"), [(2, "newer"), (0, "not supported"), ("'1'", "integer")])
def test_config_version_mismatch_is_refused(tmp_path: Path, daemon: str, version: object, says: str) -> None:
    message = _error(MODULES[daemon], _write(tmp_path, f"version = {version}\n"))
    assert "version" in message
    assert says in message


@pytest.mark.parametrize("daemon", MODULES)
def test_config_version_is_optional_and_current(tmp_path: Path, daemon: str) -> None:
    module = MODULES[daemon]
    assert module.load_config(_write(tmp_path, "")).version == module.CONFIG_VERSION
    assert module.load_config(_write(tmp_path, "version = 1\n")) == module.FileConfig()


def test_config_older_version_goes_through_the_migration_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-0 file with a renamed key upgrades through _MIGRATIONS, then decodes strictly."""

    def v0_to_v1(raw: dict[str, Any]) -> dict[str, Any]:
        server = dict(raw.pop("server", {}))
        if "bind" in server:
            server["listen"] = server.pop("bind")
        return {**raw, "server": server}

    monkeypatch.setitem(coordinator_config._MIGRATIONS, 0, v0_to_v1)
    cfg = coordinator_config.load_config(_write(tmp_path, "version = 0\n[server]\nbind = '0.0.0.0:9'\n"))
    assert (cfg.version, cfg.server.listen) == (1, "0.0.0.0:9")


def test_config_bad_toml_and_missing_file(tmp_path: Path) -> None:
    assert "line 1" in _error(noded_config, _write(tmp_path, "[gpus\n"))
    assert "No such file" in _error(coordinator_config, str(tmp_path / "absent.toml"))


def test_config_semantic_checks(tmp_path: Path) -> None:
    assert "`$.gpus.simulated`" in _error(noded_config, _write(tmp_path, "[gpus]\nsource = 'simulated'\n"))
    assert "twice" in _error(noded_config, _write(tmp_path, "[mig]\npool = [1, 1]\n"))
    bad_listen = coordinator_config.load_config(_write(tmp_path, "[server]\nlisten = 'nohost'\n"))
    with pytest.raises(InvalidArgument, match=r"\$\.server\.listen"):
        coordinator_config.to_settings(bad_listen)
    missing_key = coordinator_config.load_config(
        _write(tmp_path, f"[auth]\nadmin-key-file = '{tmp_path / 'none.key'}'\n")
    )
    with pytest.raises(InvalidArgument, match=r"\$\.auth\.admin-key-file"):
        coordinator_config.to_settings(missing_key)


# -- --check-config ----------------------------------------------------------------------------


def _check(daemon: str, path: str | None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", DAEMON_MAIN[daemon], "--check-config"]
    if path is not None:
        args += ["--config", path]
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("daemon", MODULES)
def test_check_config_exit_codes(tmp_path: Path, daemon: str) -> None:
    good = _write(tmp_path, "version = 1\n", "good.toml")
    bad = _write(tmp_path, "version = 1\n[nope]\nx = 1\n", "bad.toml")
    ok = _check(daemon, good)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{good}: OK")
    assert _check(daemon, None).returncode == 0  # no file: the defaults
    failed = _check(daemon, bad)
    assert failed.returncode == 2
    assert "unknown key `$.nope`" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert _check(daemon, str(tmp_path / "absent.toml")).returncode == 2


def test_check_config_unreadable_admin_key_is_a_config_error(tmp_path: Path) -> None:
    cfg = _write(tmp_path, f"[auth]\nadmin-key-file = '{tmp_path / 'none.key'}'\n")
    res = _check("coordinator", cfg)
    assert res.returncode == 2
    assert "admin-key-file" in res.stderr
    assert "Traceback" not in res.stderr


# -- defaults documented in one place ----------------------------------------------------------


def _has(data: Any, parts: list[str]) -> bool:
    """Whether the decoded example sets this dotted key; ``<name>`` matches any table key."""
    if not parts:
        return True
    head, rest = parts[0], parts[1:]
    if not isinstance(data, dict):
        return False
    if head == "<name>":
        return any(_has(v, rest) for v in data.values())
    return head in data and _has(data[head], rest)


def _docstring_example(module: ModuleType) -> dict[str, Any]:
    doc = module.__doc__ or ""
    body = doc.split("::", 1)[1]
    return tomllib.loads("\n".join(line.removeprefix("    ") for line in body.splitlines()))


@pytest.mark.parametrize("daemon", MODULES)
def test_config_docstring_example_is_valid_and_complete(daemon: str) -> None:
    """Every key of the Structs appears in the module docstring, and the example decodes."""
    module = MODULES[daemon]
    example = _docstring_example(module)
    msgspec.convert(example, module.FileConfig)  # strict: the example has no stale key
    missing = [k for k, _, _ in _keys(module.FileConfig) if not _has(example, k.split("."))]
    assert not missing, f"keys missing from {module.__name__}'s docstring: {missing}"


def test_docs_config_md_is_generated_and_current() -> None:
    current = (REPO_ROOT / "docs" / "config.md").read_text()
    assert current == render_reference(), (
        "regenerate: python -m tide.cli.main config reference > docs/config.md"
    )


@pytest.mark.parametrize("daemon", MODULES)
def test_config_show_output_round_trips(daemon: str) -> None:
    """``tide config show`` prints TOML that decodes back to the same effective config."""
    module = MODULES[daemon]
    cfg = module.FileConfig()
    text = to_toml(msgspec.to_builtins(cfg))
    assert msgspec.convert(tomllib.loads(text), module.FileConfig) == cfg


def test_to_toml_quotes_keys_and_escapes_values() -> None:
    data = {"a": 'x"y\n', "n": 1.5, "b": True, "l": [1, 2], "t": {"H100-80GB": 2.0, "a b": 1.0}}
    assert tomllib.loads(to_toml(data)) == data


# -- tide config show / reference ----------------------------------------------------------------


def test_cli_config_show_fills_in_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tide.cli.main import main

    path = _write(tmp_path, "[node]\nregion = 'EU'\n[mig]\npool = [0, 2]\n")
    assert main(["config", "show", "--noded", path]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown == msgspec.to_builtins(noded_config.load_config(path))
    assert (shown["node"]["region"], shown["mig"]["pool"], shown["runtime"]["kind"]) == (
        "EU",
        [0, 2],
        "process",
    )
    assert main(["config", "show", "--coordinator", "--json"]) == 0  # no file: the defaults
    assert json.loads(capsys.readouterr().out)["server"]["listen"] == "127.0.0.1:8420"


def test_cli_config_show_reports_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tide.cli.main import main

    path = _write(tmp_path, "[jobs]\nclaim-grace = 3\n")
    assert main(["config", "show", "--coordinator", path]) == 2
    err = capsys.readouterr().err
    assert "tide-coordinator config" in err and "unknown key `$.jobs.claim-grace`" in err
    assert main(["config", "show"]) == 2  # which daemon is required


def test_cli_config_reference_is_docs_config_md(capsys: pytest.CaptureFixture[str]) -> None:
    from tide.cli.main import main

    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == render_reference()
