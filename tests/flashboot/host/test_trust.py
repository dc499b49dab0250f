"""A worker owns its FlashBoot store's files; the keeper (root, host-wide) must not trust them.

Each test plays a hostile worker of endpoint ep-evil against the keeper's own operations: links
where files or directories should be, index entries that name other stores, a lock held forever.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import time
from pathlib import Path

import msgspec
import pytest

from flashboot import Keeper
from flashboot import _store as store_module
from flashboot.host import _keeper as keeper_module

from ..conftest import make_keeper, torch_model

torch = pytest.importorskip("torch")
import flashboot  # noqa: E402

FP = "0123456789abcdef0123456789abcdef"


def _load(keeper: Keeper, owner: str, model: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in keeper.env(owner).items():
        monkeypatch.setenv(key, value)
    sd = torch_model(seed=seed)
    try:
        flashboot.load(model, source=lambda: sd, device="cpu")
        return flashboot.last_load_stats().fingerprint  # type: ignore[union-attr]
    finally:
        flashboot.release()
        gc.collect()


def _plant_index(state_dir: str, fp: str, data_bytes: int, image_bytes: int = 4096) -> None:
    """Huge in RAM (the keeper evicts it at once); tiny on disk: demoted to an image, or too
    big for the disk too: dropped."""
    record = {"fingerprint": fp, "data_bytes": data_bytes, "image_bytes": image_bytes}
    Path(state_dir, "index.json").write_text(json.dumps({"version": 1, "models": {fp: record}}))


def test_a_link_planted_as_t1_is_never_read_through(keeper: Keeper, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"TOPSECRET" * 1000)
    state, shm = keeper.dirs("ep-evil")
    os.symlink(secret, os.path.join(shm, f"{FP}.t1"))
    Path(state, "headers", f"{FP}.hdr").write_bytes((8).to_bytes(8, "little") + b"{}      ")
    _plant_index(state, FP, 1 << 40)  # "huge": the keeper wants to evict it at once
    keeper.enforce()  # must neither raise nor copy the link's target anywhere
    keeper.holdings()
    files = [p for p in Path(keeper.config.state_dir).rglob("*") if p.is_file() and not p.is_symlink()]
    leaked = [p for p in files if b"TOPSECRET" in p.read_bytes()]
    assert leaked == [] and secret.read_bytes() == b"TOPSECRET" * 1000


def test_an_index_entry_cannot_name_another_store(keeper: Keeper, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = _load(keeper, "ep-victim", "weights", 1, monkeypatch)
    state, _ = keeper.dirs("ep-evil")
    for name in (f"../ep-victim/{victim}", f"../../ep-victim/{victim}"):  # via T1 or state paths
        _plant_index(state, name, 1 << 40, image_bytes=1 << 40)
        keeper.enforce()
    keeper.enforce()
    victim_shm = keeper.dirs("ep-victim")[1]
    assert os.path.exists(os.path.join(victim_shm, f"{victim}.t1"))  # untouched
    assert not [p for p in Path(keeper.dirs("ep-evil")[1]).iterdir() if p.is_file()]


def test_links_in_place_of_store_directories_make_the_keeper_leave_the_store_alone(
    keeper: Keeper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(keeper, "ep-evil", "weights", 2, monkeypatch)
    state, _ = keeper.dirs("ep-evil")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    images = Path(state, "images")
    images.rmdir()
    images.symlink_to(elsewhere)
    small = Keeper(msgspec.structs.replace(keeper.config, ram_budget_bytes=0))
    small.enforce()  # would demote ep-evil's T1 into images/ (the link) if it trusted the store
    assert list(elsewhere.iterdir()) == []
    assert small.holdings().models == ()  # the store is left out, not reported half-read


def test_a_worker_holding_its_store_lock_does_not_stall_the_keeper(
    keeper: Keeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(keeper, "ep-good", "weights", 3, monkeypatch)
    state, _ = keeper.dirs("ep-evil")
    monkeypatch.setattr(keeper_module, "LOCK_TIMEOUT_S", 0.2)
    fd = os.open(os.path.join(state, "state.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held "forever" by the hostile worker
        started = time.monotonic()
        held = keeper.holdings()
        keeper.enforce()
        keeper.start()
        assert time.monotonic() - started < 10  # bounded by the lock timeouts, not by the worker
        assert [m.owners for m in held.models] == [("ep-good",)]
    finally:
        os.close(fd)


def test_a_full_tmpfs_makes_the_keeper_make_room_across_stores(
    tmp_path: Path, shm_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = make_keeper(tmp_path / "probe", shm_dir + "-probe")
    _load(probe, "", "probe", 9, monkeypatch)
    one = probe.holdings().models[0].data_bytes  # every seed of torch_model has this size
    keeper = make_keeper(tmp_path / "state", shm_dir, ram=2 * one + 4096, disk=8 * one)
    _load(keeper, "ep-a", "m1", 10, monkeypatch)
    _load(keeper, "ep-a", "m2", 11, monkeypatch)  # ep-a fills the whole budget
    real = os.posix_fallocate

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    monkeypatch.setattr(store_module, "tmpfs_tight", lambda path, nbytes: True)  # when ep-b fills
    _load(keeper, "ep-b", "m3", 12, monkeypatch)
    monkeypatch.setattr(os, "posix_fallocate", real)
    b_state, _ = keeper.dirs("ep-b")
    assert os.path.exists(os.path.join(b_state, "want.json"))
    keeper.enforce()  # makes room for ep-b's want: ep-a's least recently used copy leaves T1
    held = keeper.holdings()
    assert not os.path.exists(os.path.join(b_state, "want.json"))  # consumed
    assert len([m for m in held.models if "ep-a" in m.owners and "t1" in m.tiers]) == 1
    _load(keeper, "ep-b", "m3", 12, monkeypatch)  # now T1 has room for ep-b
    assert any("ep-b" in m.owners and "t1" in m.tiers for m in keeper.holdings().models)


@pytest.mark.parametrize("plant", ["fifo", "garbage"])
def test_a_broken_or_blocking_index_costs_only_its_own_store(
    keeper: Keeper, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    _load(keeper, "ep-good", "weights", 4, monkeypatch)
    state, _ = keeper.dirs("ep-evil")
    index = os.path.join(state, "index.json")
    if plant == "fifo":
        os.mkfifo(index)  # an open() for reading would wait for a writer forever
        os.mkfifo(os.path.join(state, "workers", "w.json"))
        Path(state, "workers", "w.lock").touch()
    else:
        Path(index).write_bytes(b"\x00not json")
    held = keeper.holdings()
    keeper.enforce()
    keeper.start()  # a restarted noded's repair pass, too
    assert [m.owners for m in held.models] == [("ep-good",)]
