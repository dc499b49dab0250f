"""What RunPod's GraphQL operations do in Tide: endpoints through the admin API's own writes
(``_endpoint_writes``), templates as small stored records, GPU types from the RunPod table
beside Tide's (tide/api/runpod_gpus.py).  Resolvers answer plain dicts in RunPod's field
names; errors are the taxonomy's (the route turns them into GraphQL errors)."""

from __future__ import annotations

import datetime
import shlex
import time
import uuid
from typing import Any, TypeVar

import msgspec
from graphql import GraphQLResolveInfo

from coordinator._schema import encode, keys
from coordinator.api._endpoint_writes import EndpointWrites
from coordinator.store import Store
from coordinator.view import ClusterView
from tide.api.endpoints import Endpoint, EndpointSpec
from tide.api.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tide.api.runpod_gpus import RUNPOD_GPU_TYPES, RunPodGpuType, gpu_ids_of, tide_types_of
from tide.api.templates import Template

__all__ = ["Resolvers"]

Info = GraphQLResolveInfo
T = TypeVar("T")
# EndpointInput field -> EndpointSpec field, where only the name differs in case.
_SAME = {
    "idleTimeout": "idle_timeout",
    "scalerType": "scaler_type",
    "scalerValue": "scaler_value",
    "workersMin": "workers_min",
    "workersMax": "workers_max",
    "gpuCount": "gpu_count",
    "networkVolumeId": "network_volume_id",
    "executionTimeoutMs": "execution_timeout_ms",
}


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in env.items()]


def _template_json(t: Template) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(t)
    out["env"] = _env_list(t.env)
    return out


def _from_template(t: Template) -> dict[str, Any]:
    """The spec fields a template sets."""
    try:
        command = shlex.split(t.docker_args)
    except ValueError as exc:
        raise InvalidArgument(f"template {t.id!r}: dockerArgs is not a shell line ({exc})") from None
    return {"image": t.image_name, "command": command, "env": dict(t.env), "template_id": t.id}


def _checked(value: T, what: str) -> T:
    """``value`` with its types' constraints checked (a constructor does not check them)."""
    try:
        return msgspec.convert(msgspec.to_builtins(value), type(value))
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None


def _changes(given: dict[str, Any]) -> dict[str, Any]:
    """EndpointSpec changes for the EndpointInput fields given (null: not given)."""
    if given.get("type") not in (None, "", "QB"):
        raise InvalidArgument(
            f"endpoint type {given['type']!r} is not served: Tide serves queue endpoints (type QB)"
        )
    out = {spec: given[gql] for gql, spec in _SAME.items() if given.get(gql) is not None}
    if given.get("gpuIds") is not None:
        out["gpu_type_ids"] = tide_types_of(given["gpuIds"])
    if given.get("locations") is not None:  # Tide reads them as its data-center ids
        out["data_center_ids"] = [p.strip() for p in given["locations"].split(",") if p.strip()]
    if given.get("flashBootType") is not None:
        out["flashboot"] = given["flashBootType"] != "OFF"
    return out


class Resolvers:
    def __init__(self, *, store: Store, view: ClusterView, writes: EndpointWrites, prices: dict[str, float]):
        self._store = store
        self._view = view
        self._writes = writes
        self._prices = prices

    def root(self) -> dict[str, Any]:
        """The root value: Query and Mutation fields by name (graphql-core calls them)."""
        return {
            "myself": self.myself,
            "gpuTypes": self.gpu_types,
            "saveTemplate": self.save_template,
            "deleteTemplate": self.delete_template,
            "saveEndpoint": self.save_endpoint,
            "deleteEndpoint": self.delete_endpoint,
            "updateEndpointTemplate": self.update_endpoint_template,
        }

    # -- templates -------------------------------------------------------
    async def _templates(self) -> list[Template]:
        res = await self._store.range(keys.TEMPLATES)
        found = [msgspec.json.decode(kv.value, type=Template) for kv in res.kvs]
        return sorted(found, key=lambda t: t.created_at)

    async def _template(self, template_id: str) -> Template:
        kv = await self._store.get(keys.template(template_id))
        if kv is None:
            raise NotFound(
                f"template {template_id!r} not found; create one with saveTemplate "
                "(runpod.create_template), myself { podTemplates { id name } } lists them"
            )
        return msgspec.json.decode(kv.value, type=Template)

    async def save_template(self, info: Info, input: dict[str, Any]) -> dict[str, Any]:
        fields = {
            "name": input["name"],
            "image_name": input["imageName"],
            "docker_args": input.get("dockerArgs") or "",
            "container_disk_in_gb": input.get("containerDiskInGb") or 10,
            "volume_in_gb": input.get("volumeInGb") or 0,
            "volume_mount_path": input.get("volumeMountPath") or "",
            "ports": input.get("ports") or "",
            "env": {e["key"]: e["value"] for e in input.get("env") or []},
            "is_serverless": bool(input.get("isServerless")),
        }
        existing = await self._templates()
        template_id = input.get("id") or uuid.uuid4().hex[:10]
        if input.get("id"):
            await self._template(template_id)  # NotFound if it is not there
        clash = next((t for t in existing if t.name == fields["name"] and t.id != template_id), None)
        if clash is not None:
            raise AlreadyExists(f"a template named {clash.name!r} exists (id {clash.id}); pick another name")
        template = _checked(Template(**fields, id=template_id, created_at=time.time()), "template")
        await self._store.put(keys.template(template.id), encode(template))
        return _template_json(template)

    async def delete_template(self, info: Info, templateName: str) -> None:
        found = next((t for t in await self._templates() if t.name == templateName), None)
        if found is None:
            raise NotFound(f"no template named {templateName!r}")
        users = sorted(e.id for e, _ in self._view.endpoints.values() if e.spec.template_id == found.id)
        if users:
            raise FailedPrecondition(
                f"template {templateName!r} is used by endpoints {users}; delete them first"
            )
        await self._store.delete(keys.template(found.id))

    # -- endpoints -------------------------------------------------------
    async def myself(self, info: Info) -> dict[str, Any]:
        eps = sorted((e for e, _ in self._view.endpoints.values()), key=lambda e: e.id)
        templates = {t.id: t for t in await self._templates()}
        return {
            "id": "tide",
            "endpoints": [self._endpoint_json(e, templates) for e in eps],
            "podTemplates": [_template_json(t) for t in templates.values()],
        }

    def _endpoint_json(self, e: Endpoint, templates: dict[str, Template]) -> dict[str, Any]:
        s = e.spec
        template = templates.get(s.template_id)
        return {
            "id": e.id,
            "name": s.name,
            "templateId": s.template_id or None,
            "template": _template_json(template) if template is not None else None,
            "gpuIds": gpu_ids_of(s.gpu_type_ids),
            "gpuCount": s.gpu_count,
            "networkVolumeId": s.network_volume_id or None,
            "networkVolume": {"id": s.network_volume_id, "dataCenterId": None}
            if s.network_volume_id
            else None,
            "locations": ",".join(s.data_center_ids),
            "idleTimeout": s.idle_timeout,
            "scalerType": s.scaler_type,
            "scalerValue": s.scaler_value,
            "workersMin": s.workers_min,
            "workersMax": s.workers_max,
            "workersStandby": 0,
            "executionTimeoutMs": s.execution_timeout_ms,
            "allowedCudaVersions": "",
            "flashBootType": "FLASHBOOT" if s.flashboot else "OFF",
            "type": "QB",
            "aiKey": None,
            "userId": None,
            "version": e.version,
            "env": _env_list(s.env),
            "createdAt": datetime.datetime.fromtimestamp(e.created_at, datetime.UTC).isoformat(),
        }

    async def _answer(self, e: Endpoint) -> dict[str, Any]:
        templates = {}
        if e.spec.template_id:
            templates[e.spec.template_id] = await self._template(e.spec.template_id)
        return self._endpoint_json(e, templates)

    async def save_endpoint(self, info: Info, input: dict[str, Any]) -> dict[str, Any]:
        changes = _changes(input)
        if input.get("templateId"):
            changes |= _from_template(await self._template(input["templateId"]))
        if input.get("id"):
            if input.get("name") not in (None, input["id"]):
                raise InvalidArgument("an endpoint's name is its id in Tide; it cannot be renamed")
            return await self._answer(await self._writes.update(input["id"], changes))
        if not input.get("name") or not input.get("templateId"):
            raise InvalidArgument(
                "a new endpoint needs a name and a templateId (runpod.create_template makes one)"
            )
        spec = _checked(EndpointSpec(name=input["name"], **changes), "endpoint")
        return await self._answer(await self._writes.create(spec))

    async def delete_endpoint(self, info: Info, id: str) -> None:
        await self._writes.delete(id)

    async def update_endpoint_template(self, info: Info, input: dict[str, Any]) -> dict[str, Any]:
        changes = _from_template(await self._template(input["templateId"]))
        return await self._answer(await self._writes.update(input["endpointId"], changes))

    # -- GPU types -------------------------------------------------------
    def gpu_types(self, info: Info, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        wanted: set[str] | None = None
        if input and (input.get("id") or input.get("ids")):
            wanted = {input["id"]} if input.get("id") else set(input["ids"])
        return [self._gpu_json(t) for t in RUNPOD_GPU_TYPES if wanted is None or t.id in wanted]

    def _gpu_json(self, t: RunPodGpuType) -> dict[str, Any]:
        price = self._prices.get(t.tide_type)

        def lowest(info: Info, input: dict[str, Any] | None = None) -> dict[str, Any]:
            count = (input or {}).get("gpuCount") or 1
            return {"minimumBidPrice": None, "uninterruptablePrice": None if price is None else price * count}

        return {
            "id": t.id,
            "displayName": t.display_name,
            "manufacturer": "Nvidia",
            "memoryInGb": t.memory_in_gb,
            "maxGpuCount": 8,
            "secureCloud": True,
            "communityCloud": False,
            "securePrice": price,
            "lowestPrice": lowest,
        }
