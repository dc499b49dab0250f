"""Free capacity, indexed so that one placement costs O(free-count levels x data centers).

A :class:`Pool` holds the free devices of one kind: whole GPUs of one type, or
free MIG instances of one (type, profile).  Hosts sit in buckets keyed by data
center and by how many free devices of the kind they have, so "the fullest host
in these data centers with at least n free" is a walk up from bucket n, never a
scan of hosts.  Preference tiers (hosts holding the endpoint's FlashBoot
snapshot or image) are extra bucket sets over a subset of hosts, built the
first time an endpoint asks and kept current on every take.

CPU and RAM are not indexed: an endpoint that asks for them passes a host
filter to :meth:`Buckets.best`, which then walks the hosts of each level until
one has room (a scan only where hosts the buckets offer are short of CPU/RAM).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

__all__ = ["Buckets", "Pool"]


class Buckets:
    """Hosts by data center and free count; insertion order breaks ties (deterministic)."""

    def __init__(self) -> None:
        self._by: dict[str, dict[int, dict[str, None]]] = {}
        self._top = 0  # highest free count ever held; counts only go down

    def put(self, node: str, dc: str, free: int) -> None:
        if free > 0:
            self._by.setdefault(dc, {}).setdefault(free, {})[node] = None
            self._top = max(self._top, free)

    def move(self, node: str, dc: str, old: int, new: int) -> None:
        level = self._by[dc][old]
        del level[node]
        if not level:
            del self._by[dc][old]
        self.put(node, dc, new)

    def most(self, dcs: Collection[str] | None) -> int:
        """The highest free count of any host in ``dcs`` (None = any)."""
        names = self._by if dcs is None else [dc for dc in dcs if dc in self._by]
        return max((max(self._by[dc]) for dc in names if self._by[dc]), default=0)

    def best(
        self, count: int, dcs: Collection[str] | None, fits: Callable[[str], bool] | None = None
    ) -> tuple[int, str] | None:
        """(free count, node) of the fullest host with >= ``count`` free in ``dcs`` (None = any).

        ``fits`` (None = every host) filters hosts on something the buckets do not
        index (CPU and RAM): with it, a walk may scan the hosts of a level.
        """
        names = sorted(self._by) if dcs is None else sorted(dc for dc in dcs if dc in self._by)
        for free in range(count, self._top + 1):
            for dc in names:
                level = self._by[dc].get(free)
                if not level:
                    continue
                if fits is None:
                    return free, next(iter(level))
                for node in level:
                    if fits(node):
                        return free, node
        return None


class Pool:
    """Free devices of one kind across hosts, with optional preference views."""

    def __init__(self, *, key: str) -> None:
        self.key = key  # "H100-80GB" or "H100-80GB:3g.40gb"
        self.free: dict[str, list[str]] = {}  # node -> free device uuids, in device order
        self.dc_of: dict[str, str] = {}
        self.main = Buckets()
        self._total: dict[str, int] = {}  # dc -> free devices
        self._views: dict[str, Buckets] = {}
        self._views_of: dict[str, list[Buckets]] = {}  # node -> views that hold it

    def add(self, node: str, dc: str, uuid: str) -> None:
        """Build step: call for every free device, then :meth:`seal` once."""
        self.free.setdefault(node, []).append(uuid)
        self.dc_of[node] = dc

    def seal(self) -> None:
        for node, uuids in self.free.items():
            dc = self.dc_of[node]
            self.main.put(node, dc, len(uuids))
            self._total[dc] = self._total.get(dc, 0) + len(uuids)

    def view(self, name: str, nodes: Iterable[str]) -> Buckets:
        """A bucket set over ``nodes`` only (built once per name, then kept current)."""
        found = self._views.get(name)
        if found is None:
            found = self._views[name] = Buckets()
            for node in nodes:
                uuids = self.free.get(node)
                if uuids:
                    found.put(node, self.dc_of[node], len(uuids))
                    self._views_of.setdefault(node, []).append(found)
        return found

    def take(self, node: str, count: int) -> list[str]:
        uuids = self.free[node]
        taken, self.free[node] = uuids[:count], uuids[count:]
        self._moved(node, len(uuids), len(uuids) - count)
        return taken

    def remove(self, node: str, uuid: str) -> None:
        uuids = self.free[node]
        uuids.remove(uuid)
        self._moved(node, len(uuids) + 1, len(uuids))

    def capacity(self, dcs: Collection[str] | None) -> tuple[int, int]:
        """(free devices in all, most free on one host) within ``dcs``."""
        total = sum(n for dc, n in self._total.items() if dcs is None or dc in dcs)
        return total, self.main.most(dcs)

    def _moved(self, node: str, old: int, new: int) -> None:
        dc = self.dc_of[node]
        self._total[dc] -= old - new
        self.main.move(node, dc, old, new)
        for view in self._views_of.get(node, ()):
            view.move(node, dc, old, new)
