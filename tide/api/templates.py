"""Templates: RunPod's named container settings (image, start command, env) that endpoints
are made from through RunPod's management API (``saveTemplate``, ``saveEndpoint(templateId)``).

Tide's own endpoint spec carries the image, command and env itself; a template is a stored
record that the GraphQL API copies into the spec when an endpoint names it.  Stored in etcd
(``/tide/templates/<id>``): new fields get defaults, no field changes type.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["Template"]


class Template(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Field names are RunPod's ``PodTemplate``'s."""

    id: str
    name: Annotated[str, Meta(min_length=1, max_length=191)]
    image_name: Annotated[str, Meta(min_length=1)]
    docker_args: str = ""  # the start command, split like a shell line
    container_disk_in_gb: int = 10
    volume_in_gb: int = 0
    volume_mount_path: str = ""
    ports: str = ""
    env: dict[str, str] = {}
    is_serverless: bool = False
    created_at: float = 0.0
