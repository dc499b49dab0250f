"""Pull an OCI image into containerd, client side (containerd 1.6 has no pull RPC).

Under one lease (so GC leaves half-built objects alone): resolve the manifest
(picking this host's platform from an index), write config and layers into the
content store, unpack each layer onto the snapshotter with the diff service
(Prepare -> Apply -> Commit, keyed by chain ID), label the blobs so GC keeps
them once the lease is gone (manifest -> config, layers; config -> top
snapshot), and record the image.  Idempotent: what already exists is skipped,
and an image whose snapshot chain exists is not fetched at all.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import platform
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from noded.runtime.containerd._client import Ctrd, rpc
from noded.runtime.containerd._registry import (
    INDEX_TYPES,
    ImageRef,
    RegistryClient,
    parse_reference,
    select_manifest,
)
from tide.api.errors import AlreadyExists, Internal, NotFound

__all__ = ["PulledImage", "chain_ids", "ensure_image", "host_platform"]

_GC_CONTENT = "containerd.io/gc.ref.content"
_PULL_LEASE = datetime.timedelta(hours=1)
MD = tuple[tuple[str, str], ...]


class PulledImage(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    manifest_digest: str
    chain_id: str  # the top snapshot to prepare a container's rootfs on
    config: dict[str, Any]  # the image config's "config" section: Env, Entrypoint, Cmd, WorkingDir, User


def host_platform() -> tuple[str, str]:
    machine = platform.machine()
    return "linux", {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Pure: OCI chain IDs (chain[0] = diff[0]; chain[n] = sha256(chain[n-1] + " " + diff[n]))."""
    out: list[str] = []
    for diff_id in diff_ids:
        if out:
            diff_id = "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
        out.append(diff_id)
    return out


async def ensure_image(ctrd: Ctrd, registry: RegistryClient, image: str, *, snapshotter: str) -> PulledImage:
    ref = parse_reference(image)
    local = await _local_image(ctrd, ref.name, snapshotter)
    if local is not None:
        return local
    async with ctrd.lease(expire=_PULL_LEASE) as md:
        desc, manifest_bytes = await _resolve(registry, ref)
        manifest = json.loads(manifest_bytes)
        config_bytes = await _fetch_small(registry, ref, manifest["config"]["digest"])
        config = json.loads(config_bytes)
        layers, diff_ids = manifest["layers"], config["rootfs"]["diff_ids"]
        if len(layers) != len(diff_ids):
            raise Internal(f"image {ref.name}: {len(layers)} layers but {len(diff_ids)} diff_ids")
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            labels = {"containerd.io/uncompressed": diff_id}
            await _write(ctrd, md, layer, registry.blob(ref, layer["digest"]), labels)
        chain = await _unpack(ctrd, md, layers, chain_ids(diff_ids), snapshotter)
        snap_label = {f"containerd.io/gc.ref.snapshot.{snapshotter}": chain}
        await _write(ctrd, md, manifest["config"], _once(config_bytes), snap_label)
        refs = {f"{_GC_CONTENT}.config": manifest["config"]["digest"]}
        refs |= {f"{_GC_CONTENT}.l.{i}": layer["digest"] for i, layer in enumerate(layers)}
        await _write(ctrd, md, desc, _once(manifest_bytes), refs)
        await _create_image(ctrd, md, ref.name, desc)
    return PulledImage(
        name=ref.name, manifest_digest=desc["digest"], chain_id=chain, config=config.get("config", {})
    )


async def _resolve(registry: RegistryClient, ref: ImageRef) -> tuple[dict[str, Any], bytes]:
    """The platform manifest's descriptor and bytes, through an index if there is one."""
    media_type, body = await registry.manifest(ref, ref.reference)
    if media_type in INDEX_TYPES:
        os_name, arch = host_platform()
        chosen = select_manifest(json.loads(body), os=os_name, arch=arch)
        media_type, body = await registry.manifest(ref, chosen["digest"])
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(body)}, body


async def _fetch_small(registry: RegistryClient, ref: ImageRef, digest: str) -> bytes:
    data = b"".join([chunk async for chunk in registry.blob(ref, digest)])
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise Internal(f"image {ref.name}: blob {digest} does not match its digest")
    return data


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def read_content(ctrd: Ctrd, digest: str) -> bytes:
    req = ctrd.pb.content.ReadContentRequest(digest=digest)
    async with rpc(f"read content {digest}"):
        return b"".join([r.data async for r in ctrd.content.Read(req, metadata=ctrd.md)])


async def _local_image(ctrd: Ctrd, name: str, snapshotter: str) -> PulledImage | None:
    """The image if it is recorded and fully unpacked here; None means pull it."""
    pb = ctrd.pb
    try:
        async with rpc(f"image {name}"):
            image = (await ctrd.images.Get(pb.images.GetImageRequest(name=name), metadata=ctrd.md)).image
        manifest = json.loads(await read_content(ctrd, image.target.digest))
        config = json.loads(await read_content(ctrd, manifest["config"]["digest"]))
        chain = chain_ids(config["rootfs"]["diff_ids"])[-1]
        req = pb.snapshots.StatSnapshotRequest(snapshotter=snapshotter, key=chain)
        async with rpc(f"snapshot {chain}"):
            await ctrd.snapshots.Stat(req, metadata=ctrd.md)
    except (NotFound, KeyError, IndexError, ValueError):
        return None
    return PulledImage(
        name=name, manifest_digest=image.target.digest, chain_id=chain, config=config.get("config", {})
    )


async def _write(
    ctrd: Ctrd, md: MD, desc: dict[str, Any], chunks: AsyncIterator[bytes], labels: dict[str, str]
) -> None:
    """Store a blob (streamed) unless present; either way it ends up with ``labels``."""
    pb = ctrd.pb.content
    digest, size = desc["digest"], int(desc["size"])
    try:
        async with rpc(f"content {digest}"):
            await ctrd.content.Info(pb.InfoRequest(digest=digest), metadata=md)
    except NotFound:
        pass
    else:
        await _label(ctrd, md, digest, labels)
        return
    ref = f"tide-pull-{digest}"
    with contextlib.suppress(NotFound):
        async with rpc(f"abort {ref}"):
            await ctrd.content.Abort(pb.AbortRequest(ref=ref), metadata=md)

    async def requests() -> AsyncIterator[Any]:
        offset = 0
        async for chunk in chunks:
            yield pb.WriteContentRequest(
                action=pb.WRITE, ref=ref, total=size, expected=digest, offset=offset, data=chunk
            )
            offset += len(chunk)
        yield pb.WriteContentRequest(
            action=pb.COMMIT, ref=ref, total=size, expected=digest, offset=offset, labels=labels
        )

    with contextlib.suppress(AlreadyExists):  # a concurrent pull committed it first
        async with rpc(f"write {digest}"):
            async for _ in ctrd.content.Write(requests(), metadata=md):
                pass


async def _label(ctrd: Ctrd, md: MD, digest: str, labels: dict[str, str]) -> None:
    pb = ctrd.pb
    req = pb.content.UpdateRequest(
        info=pb.content.Info(digest=digest, labels=labels),
        update_mask=pb.field_mask.FieldMask(paths=[f"labels.{k}" for k in labels]),
    )
    async with rpc(f"label {digest}"):
        await ctrd.content.Update(req, metadata=md)


async def _unpack(
    ctrd: Ctrd, md: MD, layers: list[dict[str, Any]], chains: list[str], snapshotter: str
) -> str:
    pb = ctrd.pb
    parent = ""
    for layer, chain in zip(layers, chains, strict=True):
        try:
            async with rpc(f"snapshot {chain}"):
                await ctrd.snapshots.Stat(
                    pb.snapshots.StatSnapshotRequest(snapshotter=snapshotter, key=chain), metadata=md
                )
        except NotFound:
            await _apply_layer(ctrd, md, layer, chain, parent, snapshotter)
        parent = chain
    return parent


async def _apply_layer(
    ctrd: Ctrd, md: MD, layer: dict[str, Any], chain: str, parent: str, snapshotter: str
) -> None:
    pb = ctrd.pb
    key = f"extract-{uuid.uuid4().hex}-{chain}"
    prepare = pb.snapshots.PrepareSnapshotRequest(snapshotter=snapshotter, key=key, parent=parent)
    async with rpc(f"prepare {key}"):
        mounts = (await ctrd.snapshots.Prepare(prepare, metadata=md)).mounts
    try:
        diff = pb.descriptor.Descriptor(
            media_type=layer["mediaType"], digest=layer["digest"], size=int(layer["size"])
        )
        async with rpc(f"apply layer {layer['digest']}"):
            await ctrd.diff.Apply(pb.diff.ApplyRequest(diff=diff, mounts=mounts), metadata=md)
        commit = pb.snapshots.CommitSnapshotRequest(snapshotter=snapshotter, name=chain, key=key)
        with contextlib.suppress(AlreadyExists):  # a concurrent unpack won
            async with rpc(f"commit {chain}"):
                await ctrd.snapshots.Commit(commit, metadata=md)
    finally:  # after a commit the key is gone already; after a failure this cleans up
        with contextlib.suppress(NotFound):
            async with rpc(f"remove {key}"):
                await ctrd.snapshots.Remove(
                    pb.snapshots.RemoveSnapshotRequest(snapshotter=snapshotter, key=key), metadata=md
                )


async def _create_image(ctrd: Ctrd, md: MD, name: str, desc: dict[str, Any]) -> None:
    pb = ctrd.pb
    target = pb.descriptor.Descriptor(
        media_type=desc["mediaType"], digest=desc["digest"], size=int(desc["size"])
    )
    image = pb.images.Image(name=name, target=target)
    try:
        async with rpc(f"create image {name}"):
            await ctrd.images.Create(pb.images.CreateImageRequest(image=image), metadata=md)
    except AlreadyExists:
        async with rpc(f"update image {name}"):
            await ctrd.images.Update(pb.images.UpdateImageRequest(image=image), metadata=md)
