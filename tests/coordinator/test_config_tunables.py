"""The coordinator config's ``[scheduler]`` (host reserve) and ``[mig]`` (ahead-of-time re-cuts,
demand history) keys: each one parses, a bad value is refused naming its key, the defaults are the
figures the code used before they were configurable, and the values reach the components the
leader runs (the placer's host reserve, the scheduler's MigAhead, the forecast route).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator._node_schema import MigDemandRecord, NodeRecord, nkeys
from coordinator._schema import encode, keys
from coordinator.api import ApiLimits
from coordinator.api._limits import LIMITS
from coordinator.api._throttle import APP_KEY_THROTTLE
from coordinator.config import FileConfig, load_config, to_settings
from coordinator.control import Scheduler
from coordinator.control._mig_ahead_loop import OFF_REASON
from coordinator.scheduling import AheadSettings, DemandSettings, HostReserve
from coordinator.scheduling._mig_demand import (
    ALPHA_DAY,
    ALPHA_WEEK,
    MAX_CELLS,
    MIN_OCCURRENCES,
    buckets_of,
    update_demand,
)
from coordinator.scheduling._resources import (
    HOST_RESERVE_CPU_DIVISOR,
    HOST_RESERVE_MEMORY_DIVISOR,
    HOST_RESERVE_MEMORY_MB,
    host_reserve,
)
from coordinator.server import Coordinator, CoordinatorSettings
from coordinator.store import MemoryStore, Store
from coordinator.view import ClusterView
from tide.api.endpoints import Endpoint, EndpointSpec
from tide.api.errors import InvalidArgument
from tide.api.nodes import GpuInfo, NodeInventory

REPO_ROOT = Path(__file__).resolve().parents[2]
GIB_MB = 1024
DAY0 = 1_799_971_200.0  # Fri 2027-01-15 00:00 UTC
HOUR = 3600.0
ADMIN_KEY = "tk_tunables"

Settings = CoordinatorSettings

# key -> (a value that is not the default, where to_settings puts it)
VALID: dict[str, tuple[str, Callable[[Settings], Any], Any]] = {
    "scheduler.host-reserve-one-cpu-per": ("8", lambda s: s.host_reserve.one_cpu_per, 8),
    "scheduler.host-reserve-memory-min-mb": ("0", lambda s: s.host_reserve.memory_min_mb, 0),
    "scheduler.host-reserve-memory-fraction": ("0.1", lambda s: s.host_reserve.memory_fraction, 0.1),
    "scheduler.host-reserve-memory-max-fraction": ("1.0", lambda s: s.host_reserve.memory_max_fraction, 1.0),
    "mig.ahead-enabled": ("false", lambda s: s.mig_ahead.enabled, False),
    "mig.ahead-lead-s": ("300", lambda s: s.mig_ahead.lead_s, 300.0),  # an integer for a float
    "mig.ahead-card-interval-s": ("0.0", lambda s: s.mig_ahead.card_interval_s, 0.0),
    "mig.ahead-plan-interval-s": ("120.0", lambda s: s.mig_ahead.plan_interval_s, 120.0),
    "mig.ahead-min-deficit-cards": ("1.0", lambda s: s.mig_ahead.min_deficit_cards, 1.0),
    "mig.ahead-deficit-fraction": ("0.2", lambda s: s.mig_ahead.deficit_fraction, 0.2),
    "mig.ahead-max-cards": ("16", lambda s: s.mig_ahead.max_cards, 16),
    "mig.ahead-round-slack": ("0.0", lambda s: s.mig_ahead.round_slack, 0.0),
    "mig.demand-alpha-day": ("1.0", lambda s: s.mig_ahead.demand.alpha_day, 1.0),
    "mig.demand-alpha-week": ("0.1", lambda s: s.mig_ahead.demand.alpha_week, 0.1),
    "mig.demand-min-occurrences": ("3", lambda s: s.mig_ahead.demand.min_occurrences, 3),
    "mig.demand-max-keys": ("64", lambda s: s.mig_ahead.demand.max_keys, 64),
    "limits.enabled": ("false", lambda s: s.api_limits.enabled, False),
    "limits.run.rate": ("10", lambda s: s.api_limits.routes["run"].rate, 10),
    "limits.cancel.concurrent": ("0", lambda s: s.api_limits.routes["cancel"].concurrent, None),
    "limits.purge-queue.concurrent": ("1", lambda s: s.api_limits.routes["purge-queue"].concurrent, 1),
    "limits.status.per-worker-rate": ("0", lambda s: s.api_limits.routes["status"].per_worker_rate, 0),
    "limits.runsync.per-worker-concurrent": (
        "80",
        lambda s: s.api_limits.routes["runsync"].per_worker_concurrent,
        80,
    ),
    "limits.stream.rate": ("1", lambda s: s.api_limits.routes["stream"].rate, 1),
}

# key, bad value, what the message says besides the key's path
INVALID = [
    ("scheduler.host-reserve-one-cpu-per", "-1", ">= 0"),
    ("scheduler.host-reserve-one-cpu-per", "1.5", "int"),
    ("scheduler.host-reserve-memory-min-mb", "-1", ">= 0"),
    ("scheduler.host-reserve-memory-fraction", "1.5", "<= 1"),
    ("scheduler.host-reserve-memory-fraction", "nan", ">= 0"),
    ("scheduler.host-reserve-memory-max-fraction", "-0.25", ">= 0"),
    ("mig.ahead-enabled", "'yes'", "bool"),
    ("mig.ahead-lead-s", "3601.0", "<= 3600"),
    ("mig.ahead-lead-s", "-1.0", ">= 0"),
    ("mig.ahead-card-interval-s", "-1.0", ">= 0"),
    ("mig.ahead-plan-interval-s", "0.5", ">= 1"),
    ("mig.ahead-min-deficit-cards", "-0.125", ">= 0"),
    ("mig.ahead-deficit-fraction", "2.0", "<= 1"),
    ("mig.ahead-max-cards", "0", ">= 1"),
    ("mig.ahead-round-slack", "1.0", "< 1"),
    ("mig.demand-alpha-day", "0.0", "> 0"),
    ("mig.demand-alpha-week", "1.5", "<= 1"),
    ("mig.demand-min-occurrences", "0", ">= 1"),
    ("mig.demand-max-keys", "0", ">= 1"),
    ("mig.demand-max-keys", "4096", "<= 1024"),
    ("limits.enabled", "'no'", "bool"),
    ("limits.run.rate", "0", ">= 1"),
    ("limits.purge-queue.rate", "-2", ">= 1"),
    ("limits.cancel.concurrent", "-1", ">= 0"),
    ("limits.status.per-worker-rate", "-1", ">= 0"),
    ("limits.stream.per-worker-concurrent", "0.5", "int"),
]


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "coordinator.toml"
    path.write_text(text)
    return str(path)


def _one_key(key: str, value: str) -> str:
    section, _, name = key.rpartition(".")
    return f"[{section}]\n{name} = {value}\n"


# -- parsing and validation ----------------------------------------------------------------------


@pytest.mark.parametrize("key", VALID)
def test_each_key_parses_and_reaches_the_runtime_settings(tmp_path: Path, key: str) -> None:
    value, where, expected = VALID[key]
    settings = to_settings(load_config(_toml(tmp_path, _one_key(key, value))))
    assert where(settings) == expected
    default = to_settings(FileConfig())
    others = [k for k in VALID if k != key]
    assert [VALID[k][1](settings) for k in others] == [VALID[k][1](default) for k in others]


@pytest.mark.parametrize(("key", "value", "says"), INVALID)
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, key: str, value: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        load_config(_toml(tmp_path, _one_key(key, value)))
    assert f"`$.{key}`" in info.value.message
    assert says in info.value.message


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[scheduler]\nhost-reserve-cpus = 1\n", "`$.scheduler.host-reserve-cpus`"),
        ("[mig]\nahead_enabled = false\n", "`$.mig.ahead_enabled`"),  # kebab-case only
        ("[mig]\nsample-interval-s = 30\n", "`$.mig.sample-interval-s`"),
        ("[limits.status-sync]\nrate = 1\n", "`$.limits.status-sync`"),  # it is [limits.status]
        ("[limits.run]\nburst = 1\n", "`$.limits.run.burst`"),
    ],
)
def test_unknown_keys_in_the_new_sections_are_errors(tmp_path: Path, text: str, path: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        load_config(_toml(tmp_path, text))
    assert f"unknown key {path}" in info.value.message


def test_check_config_refuses_an_out_of_range_value(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[mig]\nahead-max-cards = 0\n")
    res = subprocess.run(
        [sys.executable, "-m", "coordinator.main", "--check-config", "--config", path],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert "`$.mig.ahead-max-cards`" in res.stderr and "Traceback" not in res.stderr


# -- defaults are the former constants -------------------------------------------------------------


def test_defaults_are_the_figures_the_code_used() -> None:
    settings = to_settings(FileConfig())
    assert settings.host_reserve == HostReserve(
        one_cpu_per=HOST_RESERVE_CPU_DIVISOR,
        memory_min_mb=HOST_RESERVE_MEMORY_MB,
        memory_fraction=1 / HOST_RESERVE_MEMORY_DIVISOR,
        memory_max_fraction=0.25,
    )
    assert settings.mig_ahead == AheadSettings(
        enabled=True,
        lead_s=600.0,
        card_interval_s=1800.0,
        plan_interval_s=60.0,
        min_deficit_cards=0.125,
        deficit_fraction=0.05,
        max_cards=4,
        round_slack=0.25,
        demand=DemandSettings(
            alpha_day=ALPHA_DAY, alpha_week=ALPHA_WEEK, min_occurrences=MIN_OCCURRENCES, max_keys=MAX_CELLS
        ),
    )
    assert settings.api_limits == ApiLimits(enabled=True, routes=LIMITS)
    # tide dev builds CoordinatorSettings itself: its defaults must be the file's.
    bare = CoordinatorSettings()
    assert (bare.host_reserve, bare.mig_ahead, bare.api_limits) == (
        settings.host_reserve,
        settings.mig_ahead,
        settings.api_limits,
    )


@given(cpus=st.integers(0, 4096), memory_mb=st.integers(0, 1 << 31))
def test_the_default_reserve_is_the_former_integer_rule(cpus: int, memory_mb: int) -> None:
    former_cpu = cpus // 16 * 1000
    former_memory = min(memory_mb // 4, max(2048, memory_mb // 32))
    assert host_reserve(cpus, memory_mb) == (former_cpu, former_memory)
    nothing = HostReserve(one_cpu_per=0, memory_min_mb=0, memory_fraction=0.0)
    assert host_reserve(cpus, memory_mb, nothing) == (0, 0)


# -- the values reach the components -------------------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Store, ClusterView]]:
    store = MemoryStore()
    view = ClusterView(store)
    feed = asyncio.create_task(view.run())
    await view.ready.wait()
    try:
        yield store, view
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await store.close()


async def _settle(store: Store, view: ClusterView) -> None:
    revision = await store.revision()
    async with asyncio.timeout(5):
        while view.revision < revision:
            await view.cluster_changed.wait(0.01)


async def _node(store: Store, name: str, inventory: NodeInventory, now: float) -> None:
    await store.put(nkeys.node(name), encode(NodeRecord(id=name, inventory=inventory, last_heartbeat=now)))


def _settings(tmp_path: Path, text: str) -> Settings:
    return to_settings(load_config(_toml(tmp_path, text)))


async def test_a_zero_reserve_places_a_worker_the_default_reserve_refuses(
    tmp_path: Path, cluster: tuple[Store, ClusterView]
) -> None:
    store, view = cluster
    gpu = GpuInfo(index=0, uuid="GPU-a0", type_id="H100-80GB", memory_mb=80 * GIB_MB)
    inv = NodeInventory(hostname="a", cpus=16, memory_bytes=64 << 30, gpus=[gpu])
    await _node(store, "a", inv, DAY0)
    # The whole host: 16 CPUs and 64 GiB, one more CPU and 2 GiB than the default reserve leaves.
    spec = EndpointSpec(
        name="big",
        image="img",
        gpu_type_ids=["H100-80GB"],
        cpus=16,
        memory_mb=64 * GIB_MB,
        workers_min=1,
        workers_max=1,
    )
    await store.put(keys.endpoint("big"), encode(Endpoint(id="big", spec=spec, created_at=DAY0)))
    await _settle(store, view)

    default = to_settings(FileConfig())
    refusing = Scheduler(store, view, host_reserve=default.host_reserve, mig_ahead=default.mig_ahead)
    await refusing.tick(DAY0)
    assert refusing.last_plan is not None and refusing.last_plan.assignments == []
    assert "CPU" in refusing.last_plan.reasons["big"], refusing.last_plan.reasons

    zero = _settings(
        tmp_path,
        "[scheduler]\nhost-reserve-one-cpu-per = 0\nhost-reserve-memory-min-mb = 0\n"
        "host-reserve-memory-fraction = 0.0\nhost-reserve-memory-max-fraction = 0.0\n",
    )
    placing = Scheduler(store, view, host_reserve=zero.host_reserve)
    await placing.tick(DAY0)
    assert placing.last_plan is not None
    assert [(a.node_id, a.devices) for a in placing.last_plan.assignments] == [("a", ["GPU-a0"])]


async def _learnt_night(store: Store) -> None:
    """Three nights of one whole-card 7g.80gb at 02:00 UTC in EU: the hour-of-day history."""
    hour = int((DAY0 + 2 * HOUR) // 3600)
    _, day_bucket = buckets_of(hour)
    rec = None
    for day in range(3):
        now = DAY0 + day * 86400 + 2 * HOUR
        rec = update_demand(
            rec, region="EU", bucket=day_bucket, sample={"H100-80GB:7g.80gb": 1.0}, now=now, alpha=ALPHA_DAY
        )
    assert isinstance(rec, MigDemandRecord)
    await store.put(nkeys.mig_demand("EU", day_bucket), encode(rec))


async def _mig_host(store: Store, now: float) -> None:
    gpus = [
        GpuInfo(index=i, uuid=f"GPU-eu{i}", type_id="H100-80GB", mig_capable=True, mig_enabled=True)
        for i in range(2)
    ]
    inv = NodeInventory(hostname="eu-1", region="EU", datacenter="EU-1", gpus=gpus)
    await _node(store, "eu-1", inv, now)


async def _demand_keys(store: Store) -> dict[bytes, int]:
    res = await store.range(nkeys.MIGDEMAND)
    return {kv.key: kv.mod_revision for kv in res.kvs}


@pytest.mark.parametrize("enabled", [True, False])
async def test_ahead_enabled_false_neither_samples_nor_recuts(
    tmp_path: Path, cluster: tuple[Store, ClusterView], enabled: bool
) -> None:
    store, view = cluster
    before_night = DAY0 + 3 * 86400 + 2 * HOUR - 600  # 01:50 on the fourth day
    await _learnt_night(store)
    await _mig_host(store, before_night)
    await _settle(store, view)
    history = await _demand_keys(store)

    settings = _settings(tmp_path, f"[mig]\nahead-enabled = {'true' if enabled else 'false'}\n")
    scheduler = Scheduler(store, view, lost_after_s=HOUR, mig_ahead=settings.mig_ahead)
    await scheduler.tick(before_night)
    await _settle(store, view)
    layouts = {gpu: rec.source for cards in view.mig_layouts.values() for gpu, (rec, _) in cards.items()}
    if enabled:  # the contrast: the same history and cards are re-cut, and the minute sampled
        assert list(layouts.values()) == ["ahead"]
        assert (await _demand_keys(store)).keys() > history.keys()
        return
    assert layouts == {} and scheduler.ahead.last == {}
    assert await _demand_keys(store) == history  # not one demand sample written
    # The read-only report still forecasts from the stored history, and says re-cuts are off.
    (report,) = await scheduler.ahead.report(before_night, hours=2)
    assert report.basis == "hour-of-day" and report.forecast == {"H100-80GB:7g.80gb": 1.0}
    assert report.plan is not None and report.plan.deficit == {"H100-80GB:7g.80gb": 1}
    assert (report.plan.targets, report.plan.reason) == ([], OFF_REASON)


async def test_the_coordinator_passes_its_config_to_the_scheduler_and_the_forecast_route(
    tmp_path: Path,
) -> None:
    """Through the real wiring: config file -> to_settings -> Coordinator -> Scheduler and the
    admin route ``GET /admin/v1/mig/forecast`` (the one ``tide mig forecast`` reads)."""
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    settings = _settings(
        tmp_path,
        f"[auth]\nadmin-key-sha256 = ['{digest}']\n"
        "[scheduler]\nhost-reserve-one-cpu-per = 32\n"
        "[mig]\nahead-enabled = false\nahead-lead-s = 300\nahead-max-cards = 2\n",
    )
    settings.state_dir = str(tmp_path / "state")
    settings.sock = socket.create_server(("127.0.0.1", 0))
    store = MemoryStore()
    coord = Coordinator(store, settings)
    await coord.start()
    try:
        assert coord.scheduler.host_reserve == HostReserve(one_cpu_per=32)
        assert coord.scheduler.ahead.settings == settings.mig_ahead
        assert not coord.scheduler.ahead.settings.enabled
        body = await asyncio.to_thread(_get, f"{coord.url}/admin/v1/mig/forecast")
        assert (body["aheadEnabled"], body["leadS"], body["maxCards"]) == (False, 300.0, 2)
    finally:
        await coord.stop()
        await store.close()


def _get(url: str) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())  # type: ignore[no-any-return]


async def _coordinator(tmp_path: Path, text: str, store: Store) -> Coordinator:
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    settings = _settings(tmp_path, f"[auth]\nadmin-key-sha256 = ['{digest}']\n{text}")
    settings.state_dir = str(tmp_path / "state")
    settings.sock = socket.create_server(("127.0.0.1", 0))
    coord = Coordinator(store, settings)
    await coord.start()
    return coord


async def _purges(tmp_path: Path, text: str, n: int) -> list[int]:
    """Statuses of ``n`` client purge-queues (a client key, not the operator's) on a coordinator
    built from the config ``text``, its limiter's clock frozen: only the requests spend budget."""
    import aiohttp

    from tests.fixtures.coordinator import AsyncAdmin

    store = MemoryStore()
    coord = await _coordinator(tmp_path, text, store)
    try:
        assert coord.app is not None
        coord.app[APP_KEY_THROTTLE].clock = lambda: 0.0
        async with aiohttp.ClientSession() as session:
            admin = AsyncAdmin(coord.url, ADMIN_KEY, session)
            await admin.create_endpoint("ep")
            key = (await admin.call("POST", "/admin/v1/keys", {"name": "client"}))["key"]
            statuses = []
            for _ in range(n):
                headers = {"Authorization": f"Bearer {key}"}
                async with session.post(f"{coord.url}/v2/ep/purge-queue", headers=headers) as res:
                    statuses.append(res.status)
            return statuses
    finally:
        await coord.stop()
        await store.close()


async def test_limits_from_the_config_reach_the_public_routes(tmp_path: Path) -> None:
    assert await _purges(tmp_path, "", 3) == [200, 200, 429]  # the default: 2 per 10 s
    assert await _purges(tmp_path, "[limits.purge-queue]\nrate = 1\n", 2) == [200, 429]
    assert await _purges(tmp_path, "[limits]\nenabled = false\n", 5) == [200] * 5
