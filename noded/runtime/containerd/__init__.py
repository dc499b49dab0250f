"""The containerd runtime: workers as containerd containers, over containerd's gRPC API.

``_runtime.py`` is the ``ContainerRuntime``; ``_client.py`` the gRPC stubs over one channel and
the translation of containerd's errors; ``_pull.py`` pulls images from a registry
(``_registry.py``) into containerd's content store; ``_oci_spec.py`` plans a container's OCI
spec and ``_cdi.py`` its GPU devices.  ``gen_protos.py`` generates the stubs into the
git-ignored ``_gen/`` at build time (``make gen``).  Importing this package loads grpc and
aiohttp: ``noded.runtime`` does so only when the containerd runtime is asked for.
"""

from noded.runtime.containerd._registry import RegistryAuth
from noded.runtime.containerd._runtime import ContainerdConfig, ContainerdRuntime

__all__ = ["ContainerdConfig", "ContainerdRuntime", "RegistryAuth"]
