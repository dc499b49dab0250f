"""Each bad input is one InputError naming the file, the line and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulate import InputError, load_endpoints, load_fleet, load_trace, parse_policy
from tide.api.errors import InvalidArgument

GOOD = {"t": 1, "endpoint": "a", "region": "US", "gpu": "H100-80GB:3g.40gb", "service_s": 2}


def _trace(tmp_path: Path, fleet: str, *rows: dict[str, object]) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    load_trace(str(p), load_fleet(fleet))


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({**GOOD, "prompt": "hi"}, "unknown field"),
        ({**GOOD, "t": 0.5}, "goes back in time"),
        ({**GOOD, "endpoint": "b", "gpu": "H100-80GB:9g.99gb"}, "its profiles: 1g.10gb"),
        ({**GOOD, "endpoint": "b", "gpu": "H999-1GB"}, "unknown GPU type"),
        ({**GOOD, "endpoint": "b", "gpu": "L40S-48GB:1g.10gb"}, "has no MIG profiles"),
        ({**GOOD, "region": "APAC"}, "regions: US"),
        ({**GOOD, "service_s": 0}, "positive number"),
        ({**GOOD, "gpu": "mig-24gb"}, "one gpu list per endpoint"),
    ],
)
def test_bad_trace_line(tmp_path: Path, one_card: str, bad: dict[str, object], says: str) -> None:
    with pytest.raises(InputError, match=says) as exc:
        _trace(tmp_path, one_card, GOOD, bad)
    assert exc.value.line == 2 and exc.value.file.endswith("t.jsonl")
    assert ":2: " in exc.value.message


def test_not_mig_capable_card_marked_mig(tmp_path: Path) -> None:
    p = tmp_path / "f.toml"
    p.write_text(
        '[[hosts]]\nregion = "US"\ndatacenter = "US-1"\ngpus = "1xH100-80GB"\n\n[[hosts]]\n'
        'region = "US"\ndatacenter = "US-1"\ngpus = "2xL40S-48GB:mig"\n'
    )
    with pytest.raises(InputError, match=r"L40S-48GB is not MIG-capable.*MIG types: .*H100-80GB") as exc:
        load_fleet(str(p))
    assert exc.value.line == 6


def test_unknown_fleet_key(tmp_path: Path) -> None:
    p = tmp_path / "f.toml"
    p.write_text('[[hosts]]\nregion = "US"\ndatacenter = "US-1"\ngpus = "1xH100-80GB"\nracks = 3\n')
    with pytest.raises(InputError, match=r"racks.*\[\[hosts\]\]: region, datacenter, gpus, count") as exc:
        load_fleet(str(p))
    assert exc.value.line == 5


def test_unknown_endpoint_knob(tmp_path: Path) -> None:
    p = tmp_path / "e.toml"
    p.write_text("[endpoints.a]\nworkersMax = 3\nmaxWorkers = 4\n")
    with pytest.raises(InputError, match="maxWorkers") as exc:
        load_endpoints(str(p))
    assert exc.value.line == 3


def test_layout_that_does_not_exist(one_card: str) -> None:
    fleet = load_fleet(one_card)
    with pytest.raises(InvalidArgument, match=r"no layout 'all-1g\.24gb'.*all-1g\.10gb.*all-balanced"):
        parse_policy("static:all-1g.24gb", fleet)
    with pytest.raises(InvalidArgument, match="dynamic, whole, best-static"):
        parse_policy("clever", fleet)
