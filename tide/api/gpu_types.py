"""GPU type names: Tide's canonical type ids and the names that alias them.

A canonical id is ``<MODEL>-<GiB>GB`` (``"H100-80GB"``, ``"RTXPRO6000-96GB"``); MIG-capable
types are named exactly as their catalog in mig/catalogs/ is.  The aliases are NVML product
names (what noded reads from the driver) and RunPod ``gpuTypeIds`` (what endpoint specs say),
so noded and the coordinator agree on one table.
"""

from __future__ import annotations

__all__ = ["GPU_TYPE_ALIASES", "canonical_gpu_type"]

# NVML product names and RunPod ``gpuTypeIds`` -> canonical type ids.
GPU_TYPE_ALIASES: dict[str, str] = {
    "NVIDIA H100 80GB HBM3": "H100-80GB",
    "NVIDIA H100 PCIe": "H100-80GB",
    "NVIDIA H100 NVL": "H100-94GB",
    "NVIDIA H200": "H200-141GB",
    "NVIDIA H200 NVL": "H200-141GB",
    "NVIDIA B200": "B200-180GB",
    "NVIDIA B300 SXM6 AC": "B300-269GB",  # NVML name and RunPod gpuTypeId alike
    "B300-288GB": "B300-269GB",  # the marketing 288 GB is NVML's 275040 MiB in decimal GB
    "NVIDIA A100 80GB PCIe": "A100-80GB",
    "NVIDIA A100-SXM4-80GB": "A100-80GB",
    "NVIDIA A100-PCIE-80GB": "A100-80GB",
    "NVIDIA A100-SXM4-40GB": "A100-40GB",
    "NVIDIA A100-PCIE-40GB": "A100-40GB",
    "NVIDIA A100 40GB PCIe": "A100-40GB",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "RTXPRO6000-96GB",
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "RTXPRO6000-96GB",
    "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition": "RTXPRO6000-96GB",
    "RTXPRO6000": "RTXPRO6000-96GB",
    "NVIDIA L40S": "L40S-48GB",
    "NVIDIA L40": "L40-48GB",
    "NVIDIA L4": "L4-24GB",
    "NVIDIA A40": "A40-48GB",
    "NVIDIA RTX A6000": "RTXA6000-48GB",
    "NVIDIA RTX 6000 Ada Generation": "RTX6000ADA-48GB",
    "NVIDIA GeForce RTX 4090": "RTX4090-24GB",
    # The rest of RunPod's serverless pools (tide/api/runpod_gpus.py maps pools to these).
    "NVIDIA RTX A4000": "RTXA4000-16GB",
    "NVIDIA RTX A4500": "RTXA4500-20GB",
    "NVIDIA RTX A5000": "RTXA5000-24GB",
    "NVIDIA GeForce RTX 3090": "RTX3090-24GB",
    "NVIDIA RTX 4000 Ada Generation": "RTX4000ADA-20GB",
    "NVIDIA RTX 2000 Ada Generation": "RTX2000ADA-16GB",
}
_FOLDED = {k.casefold(): v for k, v in GPU_TYPE_ALIASES.items()} | {
    v.casefold(): v for v in GPU_TYPE_ALIASES.values()
}


def canonical_gpu_type(name: str) -> str:
    """Tide's canonical id for a type name or alias (case-insensitive); unknown names unchanged."""
    stripped = name.strip()
    return _FOLDED.get(stripped.casefold(), stripped)
