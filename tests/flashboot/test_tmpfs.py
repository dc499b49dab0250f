"""What backs T1: the mount-table parser, and a real huge-page tmpfs where this host lets us mount one."""

from __future__ import annotations

import gc
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashboot import T1Backing, t1_advice
from flashboot._tmpfs import parse_mountinfo, t1_backing

MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:23 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,size=24684084k
42 25 0:39 / /dev/shm/tide-flashboot rw,relatime shared:9 - tmpfs tmpfs rw,size=4194304k,huge=within_size
43 22 0:40 / /mnt/with\\040space rw - tmpfs none rw,huge=always
44 22 0:41 / /mnt/huge rw - hugetlbfs hugetlbfs rw,pagesize=2M
"""


@pytest.mark.parametrize(
    ("path", "mount_point", "fstype", "huge", "good"),
    [
        ("/dev/shm/tide-dev-x", "/dev/shm", "tmpfs", "never", False),
        ("/dev/shm/tide-flashboot", "/dev/shm/tide-flashboot", "tmpfs", "within_size", True),
        ("/dev/shm/tide-flashboot/sub", "/dev/shm/tide-flashboot", "tmpfs", "within_size", True),
        ("/dev/shm/tide-flashbootX", "/dev/shm", "tmpfs", "never", False),  # a prefix is not a parent
        ("/mnt/with space/t1", "/mnt/with space", "tmpfs", "always", True),
        ("/mnt/huge/t1", "/mnt/huge", "hugetlbfs", "never", True),
        ("/var/lib/tide", "/", "ext4", "never", False),
    ],
)
def test_parse_mountinfo_picks_the_deepest_mount(
    path: str, mount_point: str, fstype: str, huge: str, good: bool
) -> None:
    b = parse_mountinfo(MOUNTINFO, path)
    assert (b.mount_point, b.fstype, b.huge) == (mount_point, fstype, huge)
    assert b.huge_pages is good
    assert (t1_advice(b) is None) is good


def test_the_topmost_of_two_mounts_on_one_point_wins() -> None:
    text = MOUNTINFO + "50 25 0:50 / /dev/shm rw - tmpfs tmpfs rw,huge=always\n"
    assert parse_mountinfo(text, "/dev/shm/x").huge == "always"


def test_kernel_force_and_deny_override_the_mount_option() -> None:
    forced = parse_mountinfo(MOUNTINFO, "/dev/shm/x", shmem_enabled="always advise never deny [force]")
    assert forced.huge_pages
    denied = parse_mountinfo(MOUNTINFO, "/dev/shm/tide-flashboot", shmem_enabled="never [deny] force")
    assert not denied.huge_pages


def test_advice_names_the_fix() -> None:
    disk = T1Backing(path="/var/t1", mount_point="/", fstype="ext4")
    assert t1_advice(disk) is not None and "not in RAM" in t1_advice(disk)  # type: ignore[operator]
    small = T1Backing(path="/dev/shm/t1", mount_point="/dev/shm", fstype="tmpfs")
    hint = t1_advice(small)
    assert hint is not None and "huge=within_size" in hint and "/dev/shm/t1" in hint


def test_t1_backing_of_a_path_that_does_not_exist_yet() -> None:
    b = t1_backing(f"/dev/shm/tide-test-{uuid.uuid4().hex}/deeper")
    assert b.fstype == "tmpfs" and b.in_ram and b.path.endswith("/deeper")


@pytest.fixture
def huge_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs with huge=within_size, when this host lets us mount one (root, CI)."""
    mnt = tmp_path / "huge"
    mnt.mkdir()
    rc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,huge=within_size", "tide-test-t1", str(mnt)],
        capture_output=True,
        check=False,
    ).returncode
    if rc != 0 or os.path.ismount(mnt) is False:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        gc.collect()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_restore_through_a_huge_page_t1(huge_tmpfs: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import flashboot

    from .conftest import make_keeper, torch_model

    keeper = make_keeper(tmp_path / "state", str(huge_tmpfs / "t1"))
    b = keeper.t1_backing()
    assert b.huge_pages and b.mount_point == str(huge_tmpfs) and t1_advice(b) is None
    sd = torch_model()
    state = keeper.config.state_dir
    try:
        flashboot.load("huge", source=lambda: sd, device="cpu", state_dir=state)
        flashboot.release("huge")
        gc.collect()
        got = flashboot.load("huge", source=dict, device="cpu", state_dir=state)  # from T1
        assert flashboot.last_load_stats().tier == "t1"  # type: ignore[union-attr]
        for name, want in sd.items():
            assert torch.equal(got[name].view(torch.uint8), want.contiguous().view(torch.uint8)), name
        del got
    finally:
        flashboot.release()
        gc.collect()
