"""The keeper: budgets with LRU eviction, pins, restart adoption, integrity checks, holdings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest
from safetensors import safe_open

from flashboot import Keeper, KeeperConfig, write_image
from flashboot._image import ImageIndex
from flashboot._store import HostStore
from flashboot._writer import BufferSink, describe_tensors, pack, seal
from tide.api.errors import ResourceExhausted

from .conftest import make_keeper, numpy_model


def put_t1(store: HostStore, model_id: str, sd: dict[str, np.ndarray]) -> ImageIndex:
    """Publish a model in T1 the way a worker does, without torch."""
    sources = describe_tensors(sd)
    layout = pack(sources, None)
    seg = store.reserve_t1(store.source_key(model_id), layout.data_bytes)
    assert seg is not None
    with memoryview(seg.map) as view:
        sink = BufferSink(view)
        pack(sources, sink)
        header, index = seal(layout, sink)
    store.save_header(index.fingerprint, header)
    seg.commit(index, header, model_id=model_id, stamp="")
    seg.map.close()
    return index


def _model(seed: int) -> dict[str, np.ndarray]:
    return {"w": np.random.default_rng(seed).standard_normal(3000, dtype=np.float32)}  # 12 KiB of data


def test_ram_budget_demotes_lru_models_to_disk(tmp_path: Path, shm_dir: str) -> None:
    clock = iter(range(100, 200))
    keeper = make_keeper(tmp_path, shm_dir, ram=2 * 12288, disk=1 << 20)
    store = HostStore.open(str(tmp_path), clock=lambda: float(next(clock)))
    a, b = put_t1(store, "a", _model(1)), put_t1(store, "b", _model(2))
    store.touch(a.fingerprint)  # a is now the most recently used
    c = put_t1(store, "c", _model(3))  # needs room: b, the LRU model, goes to disk
    held = keeper.holdings()
    assert set(held.t1) == {a.fingerprint, c.fingerprint} and held.t2 == (b.fingerprint,)
    assert held.ram_used <= held.ram_budget
    with safe_open(store.t2_path(b.fingerprint), framework="np") as f:  # demoted image is standard
        assert f.get_tensor("w").tobytes() == _model(2)["w"].tobytes()


def test_pinned_model_is_not_evicted(tmp_path: Path, shm_dir: str) -> None:
    keeper = make_keeper(tmp_path, shm_dir, ram=12288, disk=0)
    store = HostStore.open(str(tmp_path))
    a = put_t1(store, "a", _model(1))
    with store.pin(a.fingerprint):
        assert store.reserve_t1("other", 12288) is None  # the only candidate is pinned
        assert keeper.holdings().models[0].pinned
    assert store.reserve_t1("other", 12288) is not None  # unpinned: dropped (no disk budget)
    assert not store.in_t1(a.fingerprint) and not store.in_t2(a.fingerprint)


def test_disk_budget_evicts_lru_images(tmp_path: Path, shm_dir: str) -> None:
    keeper = make_keeper(tmp_path, shm_dir, ram=0, disk=2 * 16384 + 100)
    fps = []
    for i in range(3):
        src = tmp_path / f"src{i}.safetensors"
        write_image(str(src), _model(i))
        fps.append(keeper.import_image(str(src), model_id=f"m{i}"))
    held = keeper.holdings()
    assert set(held.t2) == set(fps[1:]) and held.disk_used <= held.disk_budget
    with pytest.raises(ResourceExhausted):
        big = tmp_path / "big.safetensors"
        write_image(str(big), {"w": np.zeros(1 << 16, dtype=np.float32)})
        keeper.import_image(str(big), model_id="big")


def test_restart_keeps_the_t2_index(tmp_path: Path, shm_dir: str) -> None:
    keeper = make_keeper(tmp_path / "state", shm_dir)
    store = HostStore.open(str(tmp_path / "state"))
    a = put_t1(store, "a", _model(1))
    assert store.demote(a.fingerprint)
    b = put_t1(store, "b", _model(2))
    src = tmp_path / "c.safetensors"
    write_image(str(src), _model(3))
    c = keeper.import_image(str(src), model_id="c", stamp="v1")
    shutil.rmtree(shm_dir)  # a reboot empties /dev/shm; T2 stays on disk
    (tmp_path / "state" / "index.json").unlink()  # even a lost index is rebuilt from the images
    restarted = make_keeper(tmp_path / "state", shm_dir)
    held = restarted.holdings()
    assert set(held.t2) == {a.fingerprint, c} and held.t1 == ()
    assert b.fingerprint not in held.fingerprints()


def test_restart_keeps_aliases_and_t1(tmp_path: Path, shm_dir: str) -> None:
    make_keeper(tmp_path, shm_dir)
    store = HostStore.open(str(tmp_path))
    a = put_t1(store, "a", _model(1))
    restarted = make_keeper(tmp_path, shm_dir)  # noded restart: T1 in /dev/shm survives
    assert restarted.holdings().t1 == (a.fingerprint,)
    assert HostStore.open(str(tmp_path)).lookup("a", "") == a.fingerprint


def test_verify_drops_a_corrupt_copy(tmp_path: Path, shm_dir: str, keeper: Keeper) -> None:
    store = HostStore.open(keeper.config.state_dir)
    a = put_t1(store, "a", _model(1))
    store.demote(a.fingerprint)
    put_t1(store, "a", _model(1))  # back in T1 too
    assert keeper.verify(a.fingerprint) == {"t1": True, "t2": True}
    with open(store.t2_path(a.fingerprint), "r+b") as f:
        f.seek(a.data_offset + 100)
        f.write(b"\xff\xfe")
    assert keeper.verify(a.fingerprint) == {"t1": True, "t2": False}
    assert keeper.holdings().t2 == ()


def test_forget_and_holdings(keeper: Keeper) -> None:
    store = HostStore.open(keeper.config.state_dir)
    a = put_t1(store, "model-a", _model(1))
    held = keeper.holdings()
    assert held.models[0].model_ids == ("model-a",) and held.models[0].tiers == ("t1",)
    assert keeper.env() == {"TIDE_FLASHBOOT_DIR": keeper.config.state_dir}
    with store.pin(a.fingerprint):
        assert not keeper.forget(a.fingerprint)
    assert keeper.forget(a.fingerprint)
    assert keeper.holdings().models == () and store.lookup("model-a", "") is None


def test_sample_model_round_trips_through_keeper_tiers(keeper: Keeper) -> None:
    store = HostStore.open(keeper.config.state_dir)
    sd = numpy_model()
    a = put_t1(store, "a", sd)
    store.demote(a.fingerprint)
    with safe_open(store.t2_path(a.fingerprint), framework="np") as f:
        for name, value in sd.items():
            assert f.get_tensor(name).tobytes() == value.tobytes()


def test_restart_adopts_described_t1_and_drops_orphans(tmp_path: Path, shm_dir: str) -> None:
    make_keeper(tmp_path / "state", shm_dir)
    store = HostStore.open(str(tmp_path / "state"))
    a = put_t1(store, "a", _model(1))
    (tmp_path / "state" / "index.json").unlink()
    orphan = Path(shm_dir) / ("f" * 32 + ".t1")
    orphan.write_bytes(b"\0" * 4096)  # left by an earlier keeper whose state dir is gone
    held = make_keeper(tmp_path / "state", shm_dir).holdings()
    assert held.t1 == (a.fingerprint,) and not orphan.exists()
    assert held.ram_free == 4096 and held.ram_used == a.data_bytes + 4096  # its pages are kept for reuse


def test_evicted_t1_memory_is_reused_by_the_next_fill(tmp_path: Path, shm_dir: str) -> None:
    keeper = make_keeper(tmp_path, shm_dir, ram=12288, disk=1 << 20)
    store = HostStore.open(str(tmp_path))
    a = put_t1(store, "a", _model(1))
    inode = os.stat(store.t1_path(a.fingerprint)).st_ino
    b = put_t1(store, "b", _model(2))  # a is demoted; its pages become b's
    assert os.stat(store.t1_path(b.fingerprint)).st_ino == inode
    held = keeper.holdings()
    assert held.t1 == (b.fingerprint,) and held.t2 == (a.fingerprint,) and held.ram_free == 0


def test_preallocated_memory_is_trimmed_to_the_budget(tmp_path: Path, shm_dir: str) -> None:
    keeper = Keeper(
        KeeperConfig(
            state_dir=str(tmp_path),
            shm_dir=shm_dir,
            ram_budget_bytes=1 << 20,
            disk_budget_bytes=0,
            preallocate_bytes=1 << 20,
        )
    )
    keeper.start()
    assert keeper.holdings().ram_free == 1 << 20
    a = put_t1(HostStore.open(str(tmp_path)), "a", _model(1))  # carved out of the free memory
    held = keeper.holdings()
    assert held.t1 == (a.fingerprint,) and held.ram_used <= 1 << 20 and held.ram_free == 0
    smaller = Keeper(
        msgspec.structs.replace(keeper.config, ram_budget_bytes=a.data_bytes, preallocate_bytes=0)
    )
    smaller.start()
    assert smaller.holdings().ram_used == a.data_bytes
