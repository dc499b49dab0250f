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
from flashboot import _store as store_module
from flashboot._image import ImageIndex
from flashboot._store import HostStore
from flashboot.worker._writer import BufferSink, describe_tensors, pack, seal
from tide.api.errors import ResourceExhausted

from ..conftest import make_keeper, numpy_model


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
    store.publish_t1(seg, index, header, model_id=model_id, stamp="")
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


# -- one store per owner ------------------------------------------------------------------------


def test_an_owner_sees_only_its_own_store(tmp_path: Path, shm_dir: str) -> None:
    """What noded binds into an endpoint's containers holds that endpoint's models and nothing else."""
    torch = pytest.importorskip("torch")
    import flashboot

    from ..conftest import torch_model

    keeper = make_keeper(tmp_path / "state", shm_dir)
    a_state, a_shm = keeper.dirs("ep-a")
    b_state, b_shm = keeper.dirs("ep-b")
    assert {a_state, b_state}.isdisjoint({keeper.config.state_dir}) and a_shm != b_shm
    assert not a_state.startswith(b_state + "/") and not b_state.startswith(a_state + "/")
    assert keeper.dirs("../../etc")[0].startswith(keeper.config.state_dir + "/owners/h-")  # no escape
    secret = torch_model(seed=1)
    try:
        flashboot.load("secret", source=lambda: secret, device="cpu", state_dir=a_state)
        fp = flashboot.last_load_stats().fingerprint  # type: ignore[union-attr]
        flashboot.release()
        # ep-b's store knows nothing of it: a load there reads ep-b's own source.
        other = torch_model(seed=2)
        got = flashboot.load("secret", source=lambda: other, device="cpu", state_dir=b_state)
        assert flashboot.last_load_stats().tier == "source"  # type: ignore[union-attr]
        assert torch.equal(got["embed.weight"], other["embed.weight"])
        del got
    finally:
        flashboot.release()
    in_a = [p.name for d in (a_state, a_shm) for p in Path(d).rglob(f"{fp}*")]
    in_b = [p.name for d in (b_state, b_shm) for p in Path(d).rglob(f"{fp}*")]
    assert in_a and not in_b


def test_budgets_hold_across_owners(tmp_path: Path, shm_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each owner may fill up to the whole budget; the keeper's pass brings the host back within
    it, least recently used first, whoever owns it."""
    pytest.importorskip("torch")
    import flashboot

    from ..conftest import torch_model

    one = _model_bytes(tmp_path)
    keeper = make_keeper(tmp_path / "state", shm_dir, ram=int(2.5 * one), disk=int(1.5 * one))
    try:
        for i, owner in enumerate(("ep-a", "ep-b", "ep-c")):  # in this order: ep-a's is the oldest
            for key, value in keeper.env(owner).items():  # what noded gives the endpoint's workers
                monkeypatch.setenv(key, value)
            sd = torch_model(seed=10 + i)
            flashboot.load(f"m{i}", source=lambda sd=sd: sd, device="cpu")
            flashboot.release()
    finally:
        flashboot.release()
    import gc

    gc.collect()
    keeper.enforce()
    held = keeper.holdings()
    assert held.ram_used <= keeper.config.ram_budget_bytes
    assert held.disk_used <= keeper.config.disk_budget_bytes
    owners_in_t1 = {o for m in held.models if "t1" in m.tiers for o in m.owners}
    assert owners_in_t1 == {"ep-b", "ep-c"}  # ep-a's model was the least recently used
    assert [m.owners for m in held.models if "t2" in m.tiers] == [("ep-a",)]  # demoted, not lost


def _model_bytes(tmp_path: Path) -> int:
    """The T1 size of conftest's torch_model (all seeds share shapes)."""
    import flashboot

    from ..conftest import torch_model

    probe = make_keeper(tmp_path / "probe", f"/dev/shm/tide-flashboot-probe-{os.getpid()}")
    try:
        flashboot.load("probe", source=lambda: torch_model(), device="cpu", state_dir=probe.config.state_dir)
        return probe.holdings().ram_used
    finally:
        flashboot.release()
        shutil.rmtree(probe.config.shm_dir, ignore_errors=True)


def test_a_full_tmpfs_falls_back_to_private_memory(keeper: Keeper, monkeypatch: pytest.MonkeyPatch) -> None:
    """T1's tmpfs cannot allocate the pages (ENOSPC): the load still succeeds, the bytes go to T2."""
    torch = pytest.importorskip("torch")
    import errno

    import flashboot

    from ..conftest import torch_model

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    monkeypatch.setattr(store_module, "tmpfs_tight", lambda path, nbytes: True)
    sd = torch_model()
    try:
        got = flashboot.load("m", source=lambda: sd, device="cpu", state_dir=keeper.config.state_dir)
        assert torch.equal(got["embed.weight"], sd["embed.weight"])
        del got
    finally:
        flashboot.release()
    held = keeper.holdings()
    assert held.t1 == () and len(held.t2) == 1
    assert not [f for f in os.listdir(keeper.config.shm_dir) if f.endswith(".tmp")]


def test_stores_of_gone_endpoints_are_collected_once_empty(
    keeper: Keeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    import gc

    import flashboot

    from ..conftest import torch_model

    for key, value in keeper.env("ep-busy").items():
        monkeypatch.setenv(key, value)
    sd = torch_model()
    flashboot.load("m", source=lambda: sd, device="cpu")
    flashboot.release()
    gc.collect()
    idle_state, idle_shm = keeper.dirs("ep-idle")  # handed out, never used
    live_state, _ = keeper.dirs("ep-live")  # empty, but its endpoint runs here
    assert keeper.collect(live_owners={"ep-live"}) == []  # handed out just now: kept a while
    assert keeper.collect(live_owners={"ep-live"}, min_idle_s=0) == ["ep-idle"]
    assert not os.path.exists(idle_state) and not os.path.exists(idle_shm)
    assert os.path.exists(live_state)  # kept: a worker may still load through it
    assert [m.owners for m in keeper.holdings().models] == [("ep-busy",)]  # holds a model: kept
    assert keeper.env("ep-idle")["TIDE_FLASHBOOT_DIR"] == idle_state and os.path.isdir(idle_state)
