"""plan_python_launch: which worker commands the prewarm pool forks, and how it reads them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noded.runtime.process._pool import fork_eligible
from noded.runtime.process._pyargv import FORKABLE_FLAGS, Exec, Fork, plan_python_launch

PY = "/opt/tide/venv/bin/python"

interpreters = st.sampled_from(["python", "python3", PY, "/opt/tide/venv/bin/../bin/python"])
flag_letters = st.lists(st.sampled_from(sorted(FORKABLE_FLAGS)), max_size=6)
scripts = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1).filter(
    lambda s: not s.startswith("-")
)
args = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\0")), max_size=5)


@st.composite
def bundles(draw: st.DrawFn) -> list[str]:
    """The flags as a user might write them: each alone, bundled, or a mix (-u -B, -uB, -OO)."""
    letters = draw(flag_letters)
    out: list[str] = []
    while letters:
        n = draw(st.integers(1, len(letters)))
        out.append("-" + "".join(letters[:n]))
        letters = letters[n:]
    return out


def canonical(letters: str) -> str:
    return "O" * min(letters.count("O"), 2) + "".join(sorted(set(letters) - {"O"}))


@given(interpreters, bundles(), scripts, args)
def test_every_written_form_forks_with_its_script_args_and_flags(
    python: str, flags: list[str], script: str, rest: list[str]
) -> None:
    plan = plan_python_launch([python, *flags, script, *rest], PY)
    letters = "".join(f[1:] for f in flags)
    assert plan == Fork(script=script, args=tuple(rest), flags=canonical(letters))
    assert plan.optimize == min(letters.count("O"), 2)
    assert plan.start_flags == (("-" + "O" * plan.optimize,) if plan.optimize else ())


@given(interpreters, bundles(), scripts, args)
def test_a_plan_written_back_plans_the_same(
    python: str, flags: list[str], script: str, rest: list[str]
) -> None:
    plan = plan_python_launch([python, *flags, script, *rest], PY)
    assert isinstance(plan, Fork)
    again = [PY, *(["-" + plan.flags] if plan.flags else []), plan.script, *plan.args]
    assert plan_python_launch(again, PY) == plan
    assert fork_eligible(again, PY)


@given(st.text(min_size=1), bundles(), scripts, args)
def test_another_interpreter_is_execd(argv0: str, flags: list[str], script: str, rest: list[str]) -> None:
    argv = [argv0, *flags, script, *rest]
    is_ours = argv0 in ("python", "python3") or argv0 in (PY, "/opt/tide/venv/bin/../bin/python")
    assert isinstance(plan_python_launch(argv, PY), Exec) != is_ours


@given(interpreters, bundles(), st.sampled_from("cmWXIvqbdxhVRP"), scripts)
def test_any_other_flag_is_execd(python: str, flags: list[str], bad: str, script: str) -> None:
    plan = plan_python_launch([python, *flags, f"-{bad}", script], PY)
    assert isinstance(plan, Exec) and f"-{bad}" in plan.reason


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["python", "handler.py"], Fork("handler.py")),
        (["python3", "handler.py", "--port", "8000"], Fork("handler.py", ("--port", "8000"))),
        ([PY, "-u", "handler.py"], Fork("handler.py", flags="u")),
        (["python", "-B", "/app/src/handler.py", "x"], Fork("/app/src/handler.py", ("x",), "B")),
        (["python", "-u", "-B", "-O", "src/h.py"], Fork("src/h.py", flags="OBu")),
        (["python", "-OO", "h.py"], Fork("h.py", flags="OO")),
        (["python", "-OOO", "h.py"], Fork("h.py", flags="OO")),
        (["python", "-sE", "h.py", "-u"], Fork("h.py", ("-u",), "Es")),
        (["python", "-c", "print(1)"], Exec("the flag -c is not one the pool forks (only -u -B -s -E -O)")),
        (["python", "-m", "handler"], Exec("the flag -m is not one the pool forks (only -u -B -s -E -O)")),
        (["python", "-"], Exec("the option '-' is not one the pool forks")),
        (["python", "--", "h.py"], Exec("the option '--' is not one the pool forks")),
        (["python", "-u"], Exec("no script to run")),
        (["/bin/sh", "-c", "python h.py"], Exec(f"'/bin/sh' is not {PY} (or python/python3)")),
        (["/usr/bin/python3", "h.py"], Exec(f"'/usr/bin/python3' is not {PY} (or python/python3)")),
        ([], Exec(f"'an empty command' is not {PY} (or python/python3)")),
    ],
)
def test_each_form(argv: list[str], expected: Fork | Exec) -> None:
    assert plan_python_launch(argv, PY) == expected
