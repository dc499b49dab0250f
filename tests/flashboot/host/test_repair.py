"""Store repair (``host/_repair.py``): after a restart the files are the truth and the index follows.

``reconcile`` adopts images and described T1 copies the index lost, forgets records (with their
aliases and headers) whose copies vanished, turns T1 copies nobody can describe into free memory,
leaves foreign images for an operator, and deletes the temps of dead fillers and stale writes.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from flashboot import _pool
from flashboot._image import ImageIndex
from flashboot._store import HostStore, StoreConfig
from flashboot.host._repair import reconcile
from flashboot.worker._writer import write_image
from tide.api.errors import Unavailable

from ..conftest import numpy_model


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HostStore]:
    shm = f"/dev/shm/tide-flashboot-test-{uuid.uuid4().hex[:12]}"
    config = StoreConfig(shm_dir=shm, ram_budget=64 << 20, disk_budget=64 << 20)
    s = HostStore(str(tmp_path / "state"), config)
    s.create_dirs()
    yield s
    shutil.rmtree(shm, ignore_errors=True)


def _image(store: HostStore, tmp_path: Path, seed: int) -> tuple[ImageIndex, bytes]:
    """An image on T2, as an earlier keeper left it; returns its index and bytes."""
    src = tmp_path / f"src-{seed}.safetensors"
    index = write_image(str(src), numpy_model(seed))
    shutil.copyfile(src, store.t2_path(index.fingerprint))
    return index, src.read_bytes()


def _t1_only(store: HostStore, tmp_path: Path, seed: int) -> ImageIndex:
    """A T1 copy with its header saved and no image on disk (a model that never was demoted)."""
    index, raw = _image(store, tmp_path, seed)
    store.save_header(index.fingerprint, store.header(index.fingerprint))
    with open(store.t1_path(index.fingerprint), "wb") as f:
        f.write(raw[index.data_offset :])
    os.unlink(store.t2_path(index.fingerprint))
    return index


def test_images_and_described_t1_copies_are_adopted_into_a_lost_index(
    store: HostStore, tmp_path: Path
) -> None:
    on_disk, _ = _image(store, tmp_path, 1)
    in_ram = _t1_only(store, tmp_path, 2)
    reconcile(store, now=time.time())
    models = store.read_index().models
    assert set(models) == {on_disk.fingerprint, in_ram.fingerprint}
    rec = models[on_disk.fingerprint]
    assert (rec.data_bytes, rec.image_bytes) == (on_disk.data_bytes, on_disk.image_bytes)
    assert rec.last_used == os.stat(store.t2_path(on_disk.fingerprint)).st_mtime
    assert store.in_t1(in_ram.fingerprint)


def test_records_whose_copies_vanished_are_forgotten_with_aliases_and_headers(
    store: HostStore, tmp_path: Path
) -> None:
    index = _t1_only(store, tmp_path, 1)
    store.record(index, model_id="a", stamp="")
    os.unlink(store.t1_path(index.fingerprint))  # a reboot empties /dev/shm
    reconcile(store, now=time.time())
    idx = store.read_index()
    assert not idx.models and not idx.aliases
    assert not os.path.exists(store.path("headers", f"{index.fingerprint}.hdr"))


def test_a_t1_copy_nobody_can_describe_becomes_free_memory(store: HostStore) -> None:
    orphan = store.t1_path("f" * 32)
    with open(orphan, "wb") as f:
        f.write(b"\0" * 4096)  # left by an earlier keeper whose state dir is gone
    reconcile(store, now=time.time())
    assert not os.path.exists(orphan) and not store.read_index().models
    assert [size for _, size in _pool.free_files(store.config.shm_dir)] == [4096]


def test_foreign_images_and_names_that_are_not_fingerprints_are_left_alone(store: HostStore) -> None:
    foreign = store.t2_path("e" * 32)
    save_file({"x": np.zeros(4, dtype=np.float32)}, foreign)  # a plain safetensors file
    stray = store.path("images", "notes.safetensors")
    Path(stray).write_bytes(b"anything")
    reconcile(store, now=time.time())
    assert os.path.exists(foreign) and os.path.exists(stray)
    assert not store.read_index().models


def test_temps_of_dead_fillers_and_stale_writes_are_deleted(store: HostStore) -> None:
    shm = Path(store.config.shm_dir)
    dead, alive = shm / "src-dead.t1.tmp", shm / "src-alive.t1.tmp"
    dead.write_bytes(b"\0" * 4096)
    alive.write_bytes(b"\0" * 4096)
    stale, fresh = Path(store.path("images", "x.tmp-old")), Path(store.path("headers", "y.tmp-new"))
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    now = time.time()
    os.utime(stale, (now - 601, now - 601))
    with store.fill_lock("src-alive"):  # its filler is still at work
        reconcile(store, now=now)
    assert not dead.exists() and alive.exists()
    assert not stale.exists() and fresh.exists()


def test_a_held_store_lock_makes_repair_unavailable(store: HostStore) -> None:
    with store.locked(), pytest.raises(Unavailable):
        reconcile(store, now=time.time(), lock_timeout=0.05)
