"""coordinator."""

from coordinator._app import Coordinator, CoordinatorSettings

__all__ = ["Coordinator", "CoordinatorSettings"]
