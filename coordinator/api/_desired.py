"""What a node must run: its assignments joined with their endpoints' specs,
and the RUNPOD_* environment that points each worker back at us."""

from __future__ import annotations

from collections.abc import Callable

from coordinator.view import ClusterView
from tide.api.nodes import DesiredWorker, DesiredWorkers

__all__ = ["desired_for", "worker_env"]


def worker_env(public_url: str, ep: str, worker: str, token: str, *, ping_s: float = 5.0) -> dict[str, str]:
    """The variables runpod.serverless.start reads (runpod_protocol.md §1.2).
    ``$ID`` and ``$RUNPOD_POD_ID`` stay literal: the SDK substitutes them."""
    base = f"{public_url}/v2/{ep}"
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=tide",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=tide",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=tide",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=tide",
        "RUNPOD_AI_API_KEY": token,
        "RUNPOD_POD_ID": worker,
        "RUNPOD_POD_HOSTNAME": worker,
        "RUNPOD_ENDPOINT_ID": ep,
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        # The SDK sleeps whole seconds (int(ms) // 1000): under 1000 it would ping in a busy loop.
        "RUNPOD_PING_INTERVAL": str(max(1, int(ping_s)) * 1000),
        "RUNPOD_LOG_LEVEL": "INFO",
    }


def desired_for(
    view: ClusterView,
    node: str,
    *,
    public_url: str,
    token: Callable[[str, str], str],
    ping_s: float = 5.0,
) -> DesiredWorkers:
    found = view.nodes.get(node)
    draining = bool(found and found[0].draining)
    workers: list[DesiredWorker] = []
    for a in sorted(view.assignments_of(node), key=lambda a: a.worker_id):
        ep = view.endpoints.get(a.endpoint_id)
        if ep is None:
            continue
        spec = ep[0].spec
        env = {
            **spec.env,
            **worker_env(
                public_url, a.endpoint_id, a.worker_id, token(a.endpoint_id, a.worker_id), ping_s=ping_s
            ),
        }
        workers.append(
            DesiredWorker(
                worker_id=a.worker_id,
                endpoint_id=a.endpoint_id,
                revision=ep[0].version,
                image=spec.image,
                command=spec.command,
                args=spec.args,
                env=env,
                gpu_type=a.gpu_type,
                devices=a.devices,
                flashboot=spec.flashboot,
                cpus=spec.cpus,
                memory_bytes=spec.memory_mb << 20,
                suspended=a.suspended,
                model=spec.model,
            )
        )
    return DesiredWorkers(
        revision=view.node_revisions[node],
        workers=workers,
        mig_layouts={gpu: list(r.profiles) for gpu, (r, _) in sorted(view.mig_layouts.get(node, {}).items())},
        drain=draining,
        action="drain" if draining else "run",
    )
