"""Code bundles (``tide deploy``): how an endpoint names one, and the upload route's answer.

An endpoint runs a bundle when its image is ``bundle://<sha256>`` (64 lowercase hex digits, the
SHA-256 of the bundle's tar, tide/sdk/_bundle.py).  The coordinator keeps bundles in the object
store at ``bundles/<sha256>``; noded fetches them through the node API.
"""

from __future__ import annotations

import re

import msgspec

__all__ = [
    "BUNDLE_SCHEME",
    "MAX_BUNDLE_BYTES",
    "BundleOut",
    "bundle_image",
    "bundle_key",
    "bundle_sha",
    "is_sha",
]

BUNDLE_SCHEME = "bundle://"
MAX_BUNDLE_BYTES = 64 << 20  # code only: weights and data belong in volumes or the model cache
_SHA = re.compile(r"^[0-9a-f]{64}$")


class BundleOut(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """PUT and GET /admin/v1/bundles/{sha}."""

    id: str  # the SHA-256 of the tar
    size: int
    created: bool = False  # this call stored it (False: it was there already)


def bundle_sha(image: str) -> str:
    """The bundle an image names, or "" when it names none (a dir:// or OCI image)."""
    if not image.startswith(BUNDLE_SCHEME):
        return ""
    sha = image[len(BUNDLE_SCHEME) :]
    return sha if _SHA.match(sha) else ""


def is_sha(sha: str) -> bool:
    return bool(_SHA.match(sha))


def bundle_image(sha: str) -> str:
    return BUNDLE_SCHEME + sha


def bundle_key(sha: str) -> str:
    """The object-store key (``bundles/`` is this kind's namespace)."""
    return "bundles/" + sha
