from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_trace(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def one_card(tmp_path: Path) -> str:
    p = tmp_path / "fleet.toml"
    p.write_text('[[hosts]]\nregion = "US"\ndatacenter = "US-TX-1"\ngpus = "1xH100-80GB:mig"\n')
    return str(p)


@pytest.fixture
def request_count(tmp_path: Path) -> str:
    """One worker per queued or running job, a 5 s idle timeout: answers by hand."""
    p = tmp_path / "endpoints.toml"
    p.write_text('[defaults]\nscalerType = "REQUEST_COUNT"\nscalerValue = 1\nidleTimeout = 5\n')
    return str(p)
