"""Content-addressed blobs across tiers (host disk now; volume and object store later)."""

from tiered_storage._blobs import BlobStore, LocalBlobStore

__all__ = ["BlobStore", "LocalBlobStore"]
