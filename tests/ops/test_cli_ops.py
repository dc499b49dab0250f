"""``tide nodes --wide`` (MIG slices and FlashBoot holdings) against a stub admin API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tide.cli._ops import _holdings, _slices
from tide.cli.main import main

NODES: list[dict[str, Any]] = [
    {
        "id": "gpu-01",
        "inventory": {
            "hostname": "gpu-01",
            "region": "EU",
            "datacenter": "EU-RO-1",
            "gpus": [
                {
                    "index": 0,
                    "typeId": "H100-80GB",
                    "migEnabled": True,
                    "migInstances": [{"profile": "3g.40gb", "busy": True}, {"profile": "1g.10gb"}],
                },
                {"index": 1, "typeId": "H100-80GB"},
            ],
            "flashboot": [
                {"fingerprint": "a", "tiers": ["t1", "t2"], "nbytes": 3 * 2**30},
                {"fingerprint": "b", "tiers": ["t2"], "nbytes": 2**30},
            ],
        },
        "workers": [{"workerId": "w1"}],
        "draining": True,
    },
    {"id": "cpu-02", "inventory": {"hostname": "cpu-02", "flashbootModels": ["x"]}, "lost": True},
]


class _Stub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(NODES if self.path.startswith("/admin/v1/nodes") else {}).encode()
        self.send_response(200 if self.path.startswith("/admin/v1/nodes") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_nodes_wide_shows_slices_and_holdings(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", url, "--api-key", "k", "nodes", "--wide"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NODE",
        "REGION",
        "DC",
        "GPUS",
        "MIG",
        "SLICES",
        "WORKERS",
        "FLASHBOOT",
        "STATE",
    ]
    assert "1/2 in use" in lines[1] and "2 models 4.0G (t1:1 t2:2)" in lines[1] and "draining" in lines[1]
    assert "1 model" in lines[2] and "lost" in lines[2]


def test_nodes_without_wide_is_the_plain_table(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", url, "--api-key", "k", "nodes"]) == 0
    assert "FLASHBOOT" not in capsys.readouterr().out


def test_slices_and_holdings_of_a_host_without_mig_or_flashboot() -> None:
    assert _slices([{"index": 0, "typeId": "A100-80GB"}]) == "-"
    assert _holdings({"hostname": "h"}) == "-"
