"""tide-noded: the host agent (inventory, worker runners, MIG, FlashBoot keeper)."""

from noded._agent import AgentSettings, NodeAgent, WorkerPlan, plan_workers
from noded._client import CoordinatorClient
from noded._runner import RestartPolicy, WorkerRunner
from noded._server import NodeServer

__all__ = [
    "AgentSettings",
    "CoordinatorClient",
    "NodeAgent",
    "NodeServer",
    "RestartPolicy",
    "WorkerPlan",
    "WorkerRunner",
    "plan_workers",
]
