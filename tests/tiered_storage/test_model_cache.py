"""The model cache: source -> region -> host, with global behind the region, on real SeaweedFS
(``seaweedfs`` is global, ``seaweedfs_region`` one region, a local directory another)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fixtures.seaweedfs import SeaweedFS, s3_store
from tide.api.errors import NotFound, ResourceExhausted
from tiered_storage import ModelCache, SourceSettings, TieredStore, open_object_store, parse_model_ref

pytestmark = pytest.mark.integration

CONFIG = b'{"model_type": "tiny"}'
WEIGHTS = os.urandom(3 << 20)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "config.json").write_bytes(CONFIG)
    (tmp_path / "src" / "sub" / "model.safetensors").write_bytes(WEIGHTS)
    return tmp_path / "src"


@pytest.fixture
def stores(seaweedfs: SeaweedFS, seaweedfs_region: SeaweedFS, tmp_path: Path) -> dict[str, TieredStore]:
    """Two regions sharing one global store: "eu" on SeaweedFS, "us" a local directory."""
    prefix = f"models-{uuid.uuid4().hex[:8]}"
    global_ = s3_store(seaweedfs, prefix)
    return {
        "eu": TieredStore(s3_store(seaweedfs_region, prefix), global_),
        "us": TieredStore(open_object_store((tmp_path / "us-region").as_uri()), global_),
    }


def _cache(
    tmp_path: Path, host: str, store: TieredStore | None, budget: int = 1 << 30, **kw: str
) -> ModelCache:
    return ModelCache(tmp_path / host, budget_bytes=budget, store=store, sources=SourceSettings(**kw))


async def test_fetched_once_per_region_then_staged_per_host(
    tmp_path: Path, model_dir: Path, stores: dict[str, TieredStore]
) -> None:
    ref = parse_model_ref(model_dir.as_uri())
    first = await _cache(tmp_path, "eu-1", stores["eu"]).ensure(ref)
    assert (first.tier, first.nbytes) == ("source", len(CONFIG) + len(WEIGHTS))
    path = Path(_cache(tmp_path, "eu-1", stores["eu"]).env(ref)["TIDE_MODEL_PATH"])
    assert (path / "sub" / "model.safetensors").read_bytes() == WEIGHTS
    assert not os.access(path / "config.json", os.W_OK) or os.geteuid() == 0
    assert (await _cache(tmp_path, "eu-1", stores["eu"]).ensure(ref)).tier == "host"
    assert (await _cache(tmp_path, "eu-2", stores["eu"]).ensure(ref)).tier == "region"
    assert (await _cache(tmp_path, "us-1", stores["us"]).ensure(ref)).tier == "global"
    assert (await _cache(tmp_path, "us-2", stores["us"]).ensure(ref)).tier == "region"  # filled by us-1


async def test_a_corrupt_region_copy_is_refetched_from_global(
    tmp_path: Path, model_dir: Path, stores: dict[str, TieredStore]
) -> None:
    ref = parse_model_ref(model_dir.as_uri())
    await _cache(tmp_path, "eu-1", stores["eu"]).ensure(ref)
    key = ref.file_key("sub/model.safetensors")
    await stores["eu"].region.put(key, b"flipped bits")
    got = await _cache(tmp_path, "eu-2", stores["eu"]).ensure(ref)
    assert got.tier == "global"
    assert (tmp_path / "eu-2" / ref.id / "files" / "sub" / "model.safetensors").read_bytes() == WEIGHTS
    assert hashlib.sha256(await stores["eu"].region.get(key)).digest() == hashlib.sha256(WEIGHTS).digest()


async def test_s3_source(tmp_path: Path, seaweedfs: SeaweedFS, stores: dict[str, TieredStore]) -> None:
    src = f"src-{uuid.uuid4().hex[:8]}"
    bucket = s3_store(seaweedfs, src)
    await bucket.put("config.json", CONFIG)
    await bucket.put("weights/model.safetensors", WEIGHTS)
    ref = parse_model_ref(f"s3://tide/{src}")
    creds = str(seaweedfs.credentials_file())
    cache = _cache(tmp_path, "h", stores["eu"], s3_endpoint_url=seaweedfs.s3_url, s3_credentials_file=creds)
    assert (await cache.ensure(ref)).tier == "source"
    assert (Path(cache.env(ref)["TIDE_MODEL_PATH"]) / "weights" / "model.safetensors").read_bytes() == WEIGHTS
    with pytest.raises(NotFound, match="no objects"):
        await cache.ensure(parse_model_ref(f"s3://tide/{src}-absent"))


async def test_a_model_that_does_not_resolve(tmp_path: Path, stores: dict[str, TieredStore]) -> None:
    with pytest.raises(NotFound, match="no such file"):
        await _cache(tmp_path, "h", stores["eu"]).ensure(parse_model_ref("file:///nonexistent/model"))
    assert os.listdir(tmp_path / "h") == []  # nothing half-staged


async def test_stores_down_reads_the_source_and_host_copies_need_nobody(
    tmp_path: Path, model_dir: Path
) -> None:
    dead = open_object_store("s3://tide/x", endpoint_url="http://127.0.0.1:9")  # nothing listens
    store = TieredStore(dead, dead)
    ref = parse_model_ref(model_dir.as_uri())
    assert (await _cache(tmp_path, "h", store).ensure(ref)).tier == "source"
    assert (await _cache(tmp_path, "h", store).ensure(ref)).tier == "host"


async def test_budget_lru_and_a_full_cache(tmp_path: Path, model_dir: Path) -> None:
    size = len(CONFIG) + len(WEIGHTS)
    cache = _cache(tmp_path, "h", None, budget=size + size // 2)
    a, b = parse_model_ref(model_dir.as_uri()), parse_model_ref((model_dir / "sub").as_uri())
    await cache.ensure(a)
    await cache.ensure(b)  # evicts a (least recently used)
    assert [m.id for m in cache.held()] == [b.id]
    cache.pin(b.id)  # a running worker uses b
    with pytest.raises(ResourceExhausted, match="full"):
        await cache.ensure(a)
    cache.unpin(b.id)
    assert (await cache.ensure(a)).tier == "source"
    with pytest.raises(ResourceExhausted):
        await _cache(tmp_path, "tiny", None, budget=10).ensure(a)


# -- hf:// against an index URL (the tests have no network) ---------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
async def hf_index() -> AsyncIterator[str]:
    files = {"config.json": CONFIG, "model.safetensors": WEIGHTS}

    async def info(request: web.Request) -> web.Response:
        if request.match_info["repo"] != "acme/tiny" or request.match_info["rev"] not in ("main", COMMIT):
            return web.json_response({"error": "Repository not found"}, status=404)
        siblings = [{"rfilename": name, "size": len(data)} for name, data in files.items()]
        return web.json_response({"sha": COMMIT, "siblings": siblings})

    async def resolve(request: web.Request) -> web.Response:
        assert request.match_info["commit"] == COMMIT
        return web.Response(body=files[request.match_info["path"]])

    app = web.Application()
    app.router.add_get("/api/models/{repo:[^/]+/[^/]+}/revision/{rev}", info)
    app.router.add_get("/{repo:[^/]+/[^/]+}/resolve/{commit}/{path:.+}", resolve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_hf_models_resolve_offline_through_the_hf_cache_layout(
    tmp_path: Path, hf_index: str, stores: dict[str, TieredStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = parse_model_ref("hf://acme/tiny")
    cache = _cache(tmp_path, "h", stores["eu"], hf_endpoint=hf_index)
    assert (await cache.ensure(ref)).tier == "source"
    assert (await _cache(tmp_path, "h2", stores["eu"]).ensure(ref)).tier == "region"  # no index needed
    env = cache.env(ref)
    assert env["HF_HUB_OFFLINE"] == "1"
    # huggingface_hub's own offline lookup (what from_pretrained calls) finds the staged files
    from huggingface_hub import hf_hub_download, snapshot_download

    got = hf_hub_download(
        "acme/tiny", "model.safetensors", cache_dir=env["HF_HUB_CACHE"], local_files_only=True
    )
    assert await asyncio.to_thread(Path(got).read_bytes) == WEIGHTS
    snap = snapshot_download("acme/tiny", cache_dir=env["HF_HUB_CACHE"], local_files_only=True)
    assert sorted(os.listdir(snap)) == ["config.json", "model.safetensors"]
    with pytest.raises(NotFound, match="404"):
        await cache.ensure(parse_model_ref("hf://acme/absent@v1"))
