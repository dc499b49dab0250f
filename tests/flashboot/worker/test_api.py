"""Worker-side restores through every tier, in process (the device is the CPU here)."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import flashboot  # noqa: E402
from flashboot import Keeper  # noqa: E402
from flashboot._store import HostStore  # noqa: E402
from flashboot.worker._device import copy_all, host_tensor  # noqa: E402
from flashboot.worker._restore import Restored, restore  # noqa: E402
from flashboot.worker._stats import StageRecorder  # noqa: E402

from ..conftest import make_keeper, torch_model  # noqa: E402


@pytest.fixture(autouse=True)
def _release_all() -> Iterator[None]:
    yield
    flashboot.release()
    gc.collect()


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert torch.equal(got[name].view(torch.uint8), value.contiguous().view(torch.uint8)), name


def _never() -> dict[str, Any]:
    raise AssertionError("the source must not be read when a tier holds the model")


def test_without_keeper_loads_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    monkeypatch.delenv("TIDE_FLASHBOOT_DIR", raising=False)
    sd = torch_model()
    save_file(sd, str(tmp_path / "m.safetensors"))
    _assert_same(flashboot.load("plain", source=str(tmp_path / "m.safetensors"), device="cpu"), sd)
    assert flashboot.last_load_stats().tier == "source"
    _assert_same(flashboot.load("plain2", source=lambda: sd, device="cpu"), sd)


def test_round_trip_source_t1_t2_t1_t0(keeper: Keeper) -> None:
    sd = torch_model()
    state = keeper.config.state_dir
    _assert_same(flashboot.load("m", source=lambda: sd, device="cpu", state_dir=state), sd)
    stats = flashboot.last_load_stats()
    assert stats is not None and stats.tier == "source" and keeper.holdings().t1 == (stats.fingerprint,)
    flashboot.release("m")
    gc.collect()

    got = flashboot.load("m", source=_never, device="cpu", state_dir=state)  # T1 -> T0
    _assert_same(got, sd)
    assert flashboot.last_load_stats().tier == "t1"
    del got
    flashboot.release("m")
    gc.collect()

    store = HostStore.open(state)
    assert store.demote(stats.fingerprint)  # T1 -> T2
    assert keeper.holdings().t1 == () and keeper.holdings().t2 == (stats.fingerprint,)
    got = flashboot.load("m", source=_never, device="cpu", state_dir=state)  # T2 -> T1 -> T0
    _assert_same(got, sd)
    t2 = flashboot.last_load_stats()
    assert t2.tier == "t2" and t2.direct_io is True and t2.nbytes > 0
    assert any(s.stage == "t2->t1->t0" and s.nbytes == t2.nbytes for s in t2.stages)
    assert keeper.holdings().t1 == (stats.fingerprint,)  # T1 refilled for the next worker
    assert keeper.verify(stats.fingerprint) == {"t1": True, "t2": True}


def test_safetensors_file_source_and_changed_file(keeper: Keeper, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = keeper.config.state_dir
    path = tmp_path / "m.safetensors"
    sd = torch_model()
    save_file(sd, str(path))
    _assert_same(flashboot.load("f", source=str(path), device="cpu", state_dir=state), sd)
    first = flashboot.last_load_stats()
    flashboot.release("f")
    _assert_same(flashboot.load("f", source=str(path), device="cpu", state_dir=state), sd)
    assert flashboot.last_load_stats().tier == "t1"
    flashboot.release("f")
    sd2 = torch_model(seed=1)
    save_file(sd2, str(path))
    os.utime(path, ns=(1, 1))  # a new version of the file: the alias must miss
    _assert_same(flashboot.load("f", source=str(path), device="cpu", state_dir=state), sd2)
    second = flashboot.last_load_stats()
    assert second.tier == "source" and second.fingerprint != first.fingerprint


def test_load_twice_returns_the_same_views(keeper: Keeper) -> None:
    sd = torch_model()
    a = flashboot.load("m", source=lambda: sd, device="cpu", state_dir=keeper.config.state_dir)
    b = flashboot.load("m", source=_never, device="cpu", state_dir=keeper.config.state_dir)
    assert flashboot.last_load_stats().tier == "t0"
    assert all(a[n].data_ptr() == b[n].data_ptr() for n in a)
    flashboot.page_out("m")
    flashboot.page_in("m")
    _assert_same(a, sd)


def test_no_ram_budget_keeps_bytes_on_disk(tmp_path: Path, shm_dir: str) -> None:
    keeper = make_keeper(tmp_path, shm_dir, ram=0)
    sd = torch_model()
    _assert_same(flashboot.load("m", source=lambda: sd, device="cpu", state_dir=str(tmp_path)), sd)
    held = keeper.holdings()
    assert held.t1 == () and len(held.t2) == 1  # no T1 room: the image went straight to T2
    flashboot.release("m")
    _assert_same(flashboot.load("m", source=_never, device="cpu", state_dir=str(tmp_path)), sd)
    assert flashboot.last_load_stats().tier == "t2"


def test_concurrent_restores_share_one_t1_copy(keeper: Keeper) -> None:
    sd = torch_model(layers=16, width=96)
    state = keeper.config.state_dir
    flashboot.load("m", source=lambda: sd, device="cpu", state_dir=state)
    fp = flashboot.last_load_stats().fingerprint
    flashboot.release("m")
    gc.collect()
    store = HostStore.open(state)
    assert store.demote(fp)

    barrier = threading.Barrier(2)
    results: list[Restored] = []

    def worker() -> None:
        barrier.wait()
        results.append(restore(store, "m", _never, torch.device("cpu"), StageRecorder()))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.tier for r in results) == ["t1", "t2"]  # one filled T1, the other mapped it
    assert os.listdir(keeper.config.shm_dir) == [f"{fp}.t1"]
    for r in results:
        _assert_same(r.loaded.tensors, sd)
    assert keeper.holdings().models[0].pinned
    results.clear()
    del r
    gc.collect()
    assert not keeper.holdings().models[0].pinned  # pins die with the mappings


def test_t0_t1_copy_path_is_bitwise(keeper: Keeper) -> None:
    """The chunked copies used for device page-out/page-in (on CPU here)."""
    import mmap

    data = torch.randint(0, 256, (3 * (1 << 20) + 4096,), dtype=torch.uint8)
    t1 = mmap.mmap(-1, data.numel())
    host = host_tensor(t1)
    copy_all(host, data, chunk=1 << 20)  # T0 -> T1
    back = torch.empty_like(data)
    copy_all(back, host, chunk=1 << 20)  # T1 -> T0
    assert torch.equal(back, data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_page_out_page_in(keeper: Keeper) -> None:
    sd = torch_model()
    got = flashboot.load("g", source=lambda: sd, device="cuda", state_dir=keeper.config.state_dir)
    flashboot.page_out("g")
    assert got["embed.weight"].untyped_storage().nbytes() == 0
    flashboot.page_in("g")
    _assert_same({k: v.cpu() for k, v in got.items()}, sd)
    flashboot.release("g")
    got = flashboot.load("g", source=_never, device="cuda", state_dir=keeper.config.state_dir)
    assert flashboot.last_load_stats().pinned_host is True
    _assert_same({k: v.cpu() for k, v in got.items()}, sd)


def test_image_staged_by_the_keeper_serves_a_path_source(keeper: Keeper, tmp_path: Path) -> None:
    sd = torch_model()
    src = tmp_path / "model.safetensors"
    flashboot.write_image(str(src), sd)
    keeper.import_image(str(src), model_id="staged", stamp=flashboot.source_stamp(str(src)))
    _assert_same(
        flashboot.load("staged", source=str(src), device="cpu", state_dir=keeper.config.state_dir), sd
    )
    assert flashboot.last_load_stats().tier == "t2"
