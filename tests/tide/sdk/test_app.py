"""tide.App: options are checked at decoration time, with errors that name the option."""

from __future__ import annotations

import pytest

import tide
from tide.sdk import OptionError, input_for


def test_decorated_function_runs_locally_and_knows_its_endpoint() -> None:
    app = tide.App("hello")

    @app.queue(gpu=["H100-80GB:1g.10gb", "RTXPRO6000-96GB"], workers=(1, 4), dependencies=["b", "a", "a"])
    def embed(text: str, n: int = 2) -> list[str]:
        return [text] * n

    assert embed("hi") == ["hi", "hi"] and embed.local("x", n=1) == ["x"]
    assert embed.endpoint == "hello.embed" and app.functions == {"embed": embed}
    f = embed.fields
    assert f["gpuTypeIds"] == ["H100-80GB:1g.10gb", "RTXPRO6000-96GB"]
    assert (f["workersMin"], f["workersMax"], f["dependencies"]) == (1, 4, ["a", "b"])
    assert input_for(embed.fn, ["hi"], {}) == {"text": "hi"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gpus": "H100-80GB"}, "unknown option gpus=.*did you mean gpu="),
        ({"workers": (3, 1)}, r"workers=\(3, 1\): the minimum is above the maximum"),
        ({"idle_timeout": 0}, "idle_timeout= must be a whole number from 1 to 3600"),
        ({"env": {"A": 1}}, "env= takes a dict of strings"),
        ({"preflight": {"x": object()}}, "preflight= must be JSON"),
        ({"dependencies": "numpy==2.*"}, None),
    ],
)
def test_options_are_checked_at_decoration(options: dict[str, object], message: str | None) -> None:
    app = tide.App("a")
    if message is None:
        app.queue(**options)(lambda x: x)
        return
    with pytest.raises(OptionError, match=message):
        app.queue(**options)


def test_bad_app_name_and_duplicates() -> None:
    with pytest.raises(OptionError, match="App name"):
        tide.App("has.dot")
    app = tide.App("a")

    def f(x: int) -> int:
        return x

    app.queue(f)
    with pytest.raises(OptionError, match="already has a function named f"):
        app.queue(f)
