"""Host CPU and RAM for the placer: what a host can give workers, and what a worker asks for.

A worker asks for its endpoint's ``cpus`` and ``memoryMb`` (the cgroup limits
noded sets).  The placer puts a worker only where those fit beside the GPUs:

    free = allocatable - sum(asks of the workers assigned to the host)
    allocatable = reported - reserve

* **0 = no ask.**  ``cpus`` = 0 / ``memoryMb`` = 0 means "unlimited" on the
  endpoint; such a worker is counted as asking for nothing in that dimension.
  That keeps every endpoint that sets neither placed exactly as before, but it
  also means unlimited workers can crowd a host: an explicit ask is what the
  placer guarantees.
* **0 = unknown.**  A host whose inventory reports 0 CPUs (or 0 bytes of
  memory) is unconstrained in that dimension.
* **Reserve** (:class:`HostReserve`, the coordinator config's ``[scheduler]
  host-reserve-*`` keys; these are the defaults).  One whole CPU per 16 CPUs
  (so hosts under 16 CPUs -- laptops, CI runners, ``tide dev`` -- reserve
  none), and 2 GiB or 1/32 of RAM, whichever is more, but at most a quarter of
  the host.  It keeps room for the OS, noded, containerd and the FlashBoot
  keeper's copy threads.  (The keeper's T1 pinned RAM has its own budget in
  noded's config, which the inventory does not report yet, so it is not
  subtracted here.)

CPUs are counted in millicores so that fractional asks (``cpus: 0.5``) add up
exactly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgspec

from tide.api.endpoints import EndpointSpec
from tide.api.nodes import NodeInventory

__all__ = [
    "DEFAULT_HOST_RESERVE",
    "HOST_RESERVE_CPU_DIVISOR",
    "HOST_RESERVE_MEMORY_DIVISOR",
    "HOST_RESERVE_MEMORY_MB",
    "NO_ASK",
    "Ask",
    "HostReserve",
    "Room",
    "ask_of",
    "host_reserve",
    "host_room",
]

HOST_RESERVE_CPU_DIVISOR = 16  # one CPU kept back per 16 (whole CPUs, rounded down)
HOST_RESERVE_MEMORY_MB = 2048  # at least 2 GiB kept back ...
HOST_RESERVE_MEMORY_DIVISOR = 32  # ... or 1/32 of RAM when that is more (64 GiB of 2 TiB)
_MB = 1 << 20


class HostReserve(msgspec.Struct, frozen=True, kw_only=True):
    """What every host keeps back from workers (the coordinator config's ``[scheduler]``).

    CPUs: one whole CPU per ``one_cpu_per`` CPUs, rounded down (0 = keep none).  RAM:
    ``memory_min_mb`` or ``memory_fraction`` of it, whichever is more, but never more than
    ``memory_max_fraction`` of it.  The defaults are the figures in the module docstring.
    """

    one_cpu_per: int = HOST_RESERVE_CPU_DIVISOR
    memory_min_mb: int = HOST_RESERVE_MEMORY_MB
    memory_fraction: float = 1 / HOST_RESERVE_MEMORY_DIVISOR
    memory_max_fraction: float = 0.25


DEFAULT_HOST_RESERVE = HostReserve()


class Ask(NamedTuple):
    """One worker's ask: millicores and MiB (0 = no ask)."""

    millicpus: int
    memory_mb: int

    @property
    def empty(self) -> bool:
        return not (self.millicpus or self.memory_mb)


NO_ASK = Ask(0, 0)


def ask_of(spec: EndpointSpec) -> Ask:
    """What each worker of ``spec`` asks for."""
    return Ask(round(spec.cpus * 1000), spec.memory_mb)


def host_reserve(cpus: int, memory_mb: int, reserve: HostReserve = DEFAULT_HOST_RESERVE) -> Ask:
    """What a host of ``cpus`` CPUs and ``memory_mb`` MiB keeps back from workers."""
    cpu = cpus // reserve.one_cpu_per * 1000 if reserve.one_cpu_per > 0 else 0
    # Floors of exact products: 1/32 and 1/4 of an int below 2**53 are exact in a float,
    # so the defaults give memory_mb // 32 and memory_mb // 4 to the MiB.
    share = math.floor(memory_mb * reserve.memory_fraction)
    cap = math.floor(memory_mb * reserve.memory_max_fraction)
    return Ask(cpu, min(cap, max(reserve.memory_min_mb, share)))


class Room:
    """Free CPU and RAM on one host during a plan; ``None`` = unconstrained (not reported)."""

    __slots__ = ("memory_mb", "millicpus")

    def __init__(self, millicpus: int | None, memory_mb: int | None) -> None:
        self.millicpus = millicpus
        self.memory_mb = memory_mb

    def fits(self, ask: Ask) -> bool:
        # A zero ask fits even a host that is already over (an endpoint's asks were raised).
        cpu_ok = not ask.millicpus or self.millicpus is None or ask.millicpus <= self.millicpus
        return cpu_ok and (not ask.memory_mb or self.memory_mb is None or ask.memory_mb <= self.memory_mb)

    def take(self, ask: Ask) -> None:
        if self.millicpus is not None:
            self.millicpus -= ask.millicpus
        if self.memory_mb is not None:
            self.memory_mb -= ask.memory_mb

    def shortfall(self, ask: Ask) -> float:
        """How far this host is from fitting ``ask``: 0 = fits; larger is worse (for "best")."""
        worst = 0.0
        for want, free in ((ask.millicpus, self.millicpus), (ask.memory_mb, self.memory_mb)):
            if want and free is not None and free < want:
                worst = max(worst, (want - max(free, 0)) / want)
        return worst


def host_room(
    inventory: NodeInventory,
    *,
    requested_cpus: float,
    requested_memory_mb: int,
    reserve: HostReserve = DEFAULT_HOST_RESERVE,
) -> Room | None:
    """The free CPU and RAM of a host, or ``None`` when it reports neither (unconstrained)."""
    cpus, memory_mb = inventory.cpus, inventory.memory_bytes // _MB
    if cpus <= 0 and memory_mb <= 0:
        return None
    kept = host_reserve(max(cpus, 0), max(memory_mb, 0), reserve)
    used = Ask(round(requested_cpus * 1000), requested_memory_mb)
    return Room(
        cpus * 1000 - kept.millicpus - used.millicpus if cpus > 0 else None,
        memory_mb - kept.memory_mb - used.memory_mb if memory_mb > 0 else None,
    )
