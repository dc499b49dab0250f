"""The simulated cluster's state: hosts and their cards, workers, endpoints and their queues.

This is what the leader would read from its view (nodes, assignments, MIG layouts, queues),
kept as plain mutable objects; :meth:`Cluster.snapshot` and friends build the planners' inputs
from it, caching each host's inventory until one of its cards changes.
"""

from __future__ import annotations

from collections import deque

from coordinator.scheduling import (
    AheadCard,
    MigLayoutRecord,
    NodeRecord,
    NodeSnapshot,
    ScalerState,
    WorkerAssignment,
)
from simulate._meter import Meter
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import GpuInfo, MigInstance, NodeInventory

__all__ = ["Card", "Cluster", "Endpoint", "Host", "Worker"]


class Card:
    __slots__ = ("ahead", "host", "index", "instances", "mig", "record", "since", "type_id", "users", "uuid")

    def __init__(self, host: Host, index: int, type_id: str, mig: bool) -> None:
        self.host = host
        self.index = index
        self.uuid = f"GPU-{host.node_id}-{index}"
        self.type_id = type_id
        self.mig = mig
        self.instances: list[MigInstance] = []
        self.record: MigLayoutRecord | None = None  # the stored layout (None: unmanaged)
        self.users = 0  # workers assigned to it
        self.since = 0.0  # when ``users`` last went from 0 to 1
        self.ahead: AheadCard | None = None  # cached planner view

    def info(self) -> GpuInfo:
        return GpuInfo(
            index=self.index,
            uuid=self.uuid,
            type_id=self.type_id,
            mig_capable=self.mig,
            mig_enabled=self.mig,
            mig_instances=list(self.instances),
        )


class Host:
    __slots__ = ("_inventory", "cards", "datacenter", "holds", "node_id", "record", "region")

    def __init__(self, node_id: str, region: str, datacenter: str) -> None:
        self.node_id = node_id
        self.region = region
        self.datacenter = datacenter
        self.cards: list[Card] = []
        self.holds: dict[str, float] = {}  # endpoint -> when its last worker here stopped (FlashBoot)
        self._inventory: NodeInventory | None = None
        self.record: NodeRecord | None = None

    def changed(self) -> None:
        self._inventory = None
        self.record = None
        for c in self.cards:
            c.ahead = None

    def inventory(self) -> NodeInventory:
        if self._inventory is None:
            self._inventory = NodeInventory(
                hostname=self.node_id,
                region=self.region,
                datacenter=self.datacenter,
                gpus=[c.info() for c in self.cards],
            )
        return self._inventory

    def node_record(self) -> NodeRecord:
        if self.record is None:
            self.record = NodeRecord(id=self.node_id, inventory=self.inventory())
        return self.record


class Worker:
    __slots__ = (
        "alive",
        "assignment",
        "busy",
        "cards",
        "created",
        "ep",
        "host",
        "idle_since",
        "ready",
        "share",
        "worker_id",
    )

    def __init__(
        self, worker_id: str, ep: Endpoint, host: Host, cards: list[Card], share: float, a: WorkerAssignment
    ) -> None:
        self.worker_id = worker_id
        self.ep = ep
        self.host = host
        self.cards = cards
        self.share = share  # card-equivalents it bills
        self.assignment = a
        self.created = a.created_at
        self.ready = False
        self.alive = True
        self.busy = 0
        self.idle_since = 0.0


class Endpoint:
    __slots__ = ("free", "id", "in_progress", "last_active", "queue", "scaler", "spec", "workers")

    def __init__(self, spec: EndpointSpec) -> None:
        self.id = spec.name
        self.spec = spec
        self.queue: deque[tuple[float, float, bool]] = deque()  # (arrived, service_s, measured)
        self.workers: dict[str, Worker] = {}  # in creation order
        self.free: dict[str, Worker] = {}  # ready workers with a free job slot
        self.scaler = ScalerState()
        self.in_progress = 0
        self.last_active = -1e18  # last time it had load or workers


class Cluster:
    def __init__(self, hosts: list[Host], endpoints: list[Endpoint], meter: Meter) -> None:
        self.hosts = hosts
        self.by_id = {h.node_id: h for h in hosts}
        self.cards = {c.uuid: c for h in hosts for c in h.cards}
        self.endpoints = {e.id: e for e in endpoints}
        self.meter = meter
        self.instance_card: dict[str, Card] = {}  # MIG uuid -> its card
        self.in_use: dict[str, set[str]] = {h.node_id: set() for h in hosts}  # node -> device uuids

    def set_instances(self, card: Card, instances: list[MigInstance]) -> None:
        for i in card.instances:
            self.instance_card.pop(i.uuid, None)
        card.instances = instances
        for i in instances:
            self.instance_card[i.uuid] = card
        card.host.changed()

    def hold(self, card: Card, now: float) -> None:
        if card.users == 0:
            card.since = now
        card.users += 1
        card.ahead = None

    def release(self, card: Card, now: float) -> None:
        card.users -= 1
        card.ahead = None
        if card.users == 0:
            self.meter.interval(card.since, now, 1.0, self.meter.gpu_h)

    def close(self, now: float) -> None:
        """End of the run: bill what is still held."""
        for card in self.cards.values():
            if card.users:
                self.meter.interval(card.since, now, 1.0, self.meter.gpu_h)
                card.since = now
        for ep in self.endpoints.values():
            for w in ep.workers.values():
                self.meter.interval(w.created, now, w.share, self.meter.slice_h)

    def withheld(self, card: Card) -> bool:
        """A card whose stored layout noded has yet to apply: its instances are withheld."""
        rec = card.record
        if rec is None or not card.mig:
            return False
        return sorted(rec.profiles) != sorted(i.profile for i in card.instances)

    def snapshot_nodes(self, hosts: list[Host], now: float) -> list[NodeSnapshot]:
        out = []
        for h in hosts:
            in_use = list(self.in_use[h.node_id])
            for c in h.cards:
                if self.withheld(c):
                    in_use.extend(i.uuid for i in c.instances)
            fresh = sorted(ep for ep, t in h.holds.items() if t >= 0)
            out.append(
                NodeSnapshot(
                    node_id=h.node_id, inventory=h.inventory(), in_use=in_use, flashboot_endpoints=fresh
                )
            )
        return out
