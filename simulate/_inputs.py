"""The simulator's inputs, decoded strictly: a trace (JSONL), a fleet and endpoints (TOML).

Every error is an :class:`InputError` naming the file, the line and what is allowed
(docs/simulate.md has the formats).  The trace is kept as parallel lists, not one object per
request: a simulated day holds millions of them.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec

from coordinator.scheduling import canonical_gpu_type, catalog_of, parse_gpu_type_id
from mig import list_type_ids, parse_gpu_spec
from simulate._errors import InputError
from simulate._stages import StageModel
from tide.api.errors import InvalidArgument

__all__ = [
    "EndpointKnobs",
    "EndpointsFile",
    "Fleet",
    "HostGroup",
    "Trace",
    "TraceEndpoint",
    "load_endpoints",
    "load_fleet",
    "load_trace",
]


class TraceLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    t: float
    endpoint: str
    region: str
    gpu: str
    service_s: float


class HostGroup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    region: str
    datacenter: str
    gpus: str  # tide dev --gpus spelling: "4xH100-80GB:mig,4xRTXPRO6000-96GB:mig"
    count: int = 1


class FleetFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    hosts: list[HostGroup]
    stages: StageModel = StageModel()


class Fleet(msgspec.Struct, frozen=True, kw_only=True):
    groups: list[tuple[HostGroup, list[tuple[str, bool]]]]  # group, its cards: (type id, MIG pool)
    stages: StageModel

    @property
    def regions(self) -> list[str]:
        return sorted({g.region for g, _ in self.groups})

    def datacenters(self, region: str) -> list[str]:
        return sorted({g.datacenter for g, _ in self.groups if g.region == region})

    @property
    def types(self) -> set[str]:
        return {t for _, cards in self.groups for t, _ in cards}

    @property
    def mig_types(self) -> list[str]:
        return sorted({t for _, cards in self.groups for t, mig in cards if mig})


class EndpointKnobs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """What an endpoints file may set; RunPod's names.  Unset = the defaults table, then Tide's."""

    workers_min: int | None = None
    workers_max: int | None = None
    idle_timeout: int | None = None
    scaler_type: Literal["QUEUE_DELAY", "REQUEST_COUNT"] | None = None
    scaler_value: int | None = None
    concurrency_per_worker: int | None = None
    flashboot: bool | None = None


class EndpointsFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    defaults: EndpointKnobs = EndpointKnobs()
    endpoints: dict[str, EndpointKnobs] = {}


class TraceEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    region: str
    gpu: list[str]  # the gpuTypeIds priority list
    raw_gpu: str  # as the trace wrote it
    line: int  # where it first appears


class Trace(msgspec.Struct, kw_only=True):
    endpoints: list[TraceEndpoint]
    t: list[float]
    endpoint: list[int]  # index into ``endpoints``
    service_s: list[float]

    def __len__(self) -> int:
        return len(self.t)


def _line_of(text: str, key: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*\[*\s*[\w.\"-]*{re.escape(key)}\b", line):
            return n
    return 0


def _toml(path: str, type_: type[msgspec.Struct]) -> tuple[msgspec.Struct, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, 0, f"cannot read it: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = int(m.group(1)) if (m := re.search(r"line (\d+)", str(exc))) else 0
        raise InputError(path, line, f"not TOML: {exc}") from None
    try:
        return msgspec.convert(raw, type_), text
    except msgspec.ValidationError as exc:
        msg = str(exc)
        named = re.search(r"field `([^`]+)`", msg)
        keys = [named.group(1)] if named else re.findall(r"[.\[]`?([\w-]+)", msg.split("`$")[-1])
        line = _line_of(text, keys[-1]) if keys else 0
        raise InputError(path, line, f"{msg} (allowed keys: {_keys(type_)})") from None


def _keys(type_: type[msgspec.Struct]) -> str:
    """Every key a file of this type may hold, by table."""
    tables: list[tuple[str, type[msgspec.Struct]]] = [("top level", type_)]
    if type_ is FleetFile:
        tables += [("[[hosts]]", HostGroup), ("[stages]", StageModel)]
    elif type_ is EndpointsFile:
        tables += [("[defaults] and [endpoints.NAME]", EndpointKnobs)]
    return "; ".join(
        f"{where}: {', '.join(f.encode_name for f in msgspec.structs.fields(t))}" for where, t in tables
    )


def _cards(path: str, line: int, spec: str) -> list[tuple[str, bool]]:
    try:
        gpus = parse_gpu_spec(spec)
    except InvalidArgument as exc:
        raise InputError(path, line, exc.message) from None
    for g in gpus:
        if g.mig_enabled and catalog_of(g.type_id) is None:
            allowed = ", ".join(list_type_ids())
            raise InputError(
                path, line, f"{g.type_id} is not MIG-capable, so it cannot be ':mig'; MIG types: {allowed}"
            )
    return [(g.type_id, g.mig_enabled) for g in gpus]


def load_fleet(path: str) -> Fleet:
    """Decode a fleet file (hosts per region and data center, their cards; optional stages)."""
    raw, text = _toml(path, FleetFile)
    assert isinstance(raw, FleetFile)
    groups = []
    for i, g in enumerate(raw.hosts):
        line = _nth_line(text, "[[hosts]]", i)
        if g.count < 1:
            raise InputError(path, line, f"count is {g.count}; a host group needs count >= 1")
        if not g.region or not g.datacenter:
            raise InputError(path, line, "region and datacenter must be non-empty")
        groups.append((g, _cards(path, line, g.gpus)))
    if not groups:
        raise InputError(path, 0, "no hosts: add at least one [[hosts]] table")
    return Fleet(groups=groups, stages=raw.stages)


def _nth_line(text: str, marker: str, n: int) -> int:
    found = [i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith(marker)]
    return found[n] if n < len(found) else 0


def load_endpoints(path: str) -> EndpointsFile:
    raw, _ = _toml(path, EndpointsFile)
    assert isinstance(raw, EndpointsFile)
    return raw


def _check_gpu(gpu: str, fleet: Fleet) -> str | None:
    """Why a trace's ``gpu`` field is not usable (None: it is)."""
    entries = [e.strip() for e in gpu.split(",")]
    for entry in entries:
        if not entry:
            return "an empty entry; write a gpuTypeIds entry or a comma-separated priority list"
        need = parse_gpu_type_id(entry)
        if need.kind == "mig":
            catalog = catalog_of(need.type_id)
            if catalog is None:
                return f"{need.type_id} has no MIG profiles; MIG types: {', '.join(list_type_ids())}"
            if not catalog.has_profile(need.profile):
                names = ", ".join(p.name for p in catalog.profiles)
                return f"{need.type_id} has no profile {need.profile!r}; its profiles: {names}"
        elif need.kind == "gpu" and need.type_id not in fleet.types and need.type_id not in list_type_ids():
            known = ", ".join(sorted(fleet.types | set(list_type_ids())))
            return f"unknown GPU type {need.type_id!r}; known: {known}, or mig-<N>gb"
    return None


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    try:
        with open(path, "rb") as f:
            yield from enumerate(f, 1)
    except OSError as exc:
        raise InputError(path, 0, f"cannot read it: {exc.strerror}") from None


def load_trace(path: str, fleet: Fleet) -> Trace:
    """Decode a JSONL trace against ``fleet`` (regions, GPU types); see the module docstring."""
    decoder = msgspec.json.Decoder(TraceLine)
    trace = Trace(endpoints=[], t=[], endpoint=[], service_s=[])
    index: dict[tuple[str, str], int] = {}
    checked: dict[str, str | None] = {}
    regions = set(fleet.regions)
    last = 0.0
    for n, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            rec = decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise InputError(
                path, n, f"{exc}; a line is {{t, endpoint, region, gpu, service_s}} and nothing else"
            ) from None
        if not (math.isfinite(rec.t) and rec.t >= last):
            raise InputError(
                path, n, f"t={rec.t} goes back in time (previous {last}); lines must be in time order"
            )
        if not (math.isfinite(rec.service_s) and rec.service_s > 0):
            raise InputError(path, n, f"service_s={rec.service_s}; it must be a positive number of seconds")
        last = rec.t
        key = (rec.endpoint, rec.region)
        i = index.get(key)
        if i is None:
            i = index[key] = _new_endpoint(trace, rec, n, path, fleet, regions, checked)
        elif trace.endpoints[i].raw_gpu != rec.gpu:
            was = trace.endpoints[i].raw_gpu
            raise InputError(
                path,
                n,
                f"endpoint {rec.endpoint} asks for {rec.gpu!r} here, {was!r} on line "
                f"{trace.endpoints[i].line}; one gpu list per endpoint",
            )
        trace.t.append(rec.t)
        trace.endpoint.append(i)
        trace.service_s.append(rec.service_s)
    return trace


def _entries(gpu: str) -> list[str]:
    return [e.strip() for e in gpu.split(",")]


def _new_endpoint(
    trace: Trace,
    rec: TraceLine,
    n: int,
    path: str,
    fleet: Fleet,
    regions: set[str],
    checked: dict[str, str | None],
) -> int:
    if rec.region not in regions:
        raise InputError(
            path, n, f"region {rec.region!r} has no hosts in the fleet; regions: {', '.join(sorted(regions))}"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", rec.endpoint):
        raise InputError(path, n, f"endpoint {rec.endpoint!r}: letters, digits, '-' and '_' (at most 63)")
    if rec.gpu not in checked:
        checked[rec.gpu] = _check_gpu(rec.gpu, fleet)
    if (why := checked[rec.gpu]) is not None:
        raise InputError(path, n, f"gpu {rec.gpu!r}: {why}")
    gpu = [
        canonical_gpu_type(e) if ":" not in e and not e.startswith("mig-") else e for e in _entries(rec.gpu)
    ]
    trace.endpoints.append(
        TraceEndpoint(name=rec.endpoint, region=rec.region, gpu=gpu, raw_gpu=rec.gpu, line=n)
    )
    return len(trace.endpoints) - 1
