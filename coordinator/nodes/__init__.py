"""The node side of the coordinator: node API, scheduling loop, metering."""

from coordinator.nodes._routes import NodeRoutes, mint_node_token
from coordinator.nodes._scheduler import Scheduler

__all__ = ["NodeRoutes", "Scheduler", "mint_node_token"]
