"""The node side of the coordinator's HTTP: the node API and the admin routes about nodes."""

from coordinator.nodes._routes import NodeRoutes, mint_node_token

__all__ = ["NodeRoutes", "mint_node_token"]
