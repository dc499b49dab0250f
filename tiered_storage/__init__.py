"""Storage tiers: the object store every coordinator replica sees (S3 or a local
directory, one interface), and content-addressed host blobs."""

from tiered_storage._blobs import BlobStore, LocalBlobStore
from tiered_storage._host_plan import HostModel, plan_host_evictions
from tiered_storage._local_objects import LocalObjectStore
from tiered_storage._model_cache import ModelCache, Staged
from tiered_storage._model_ref import ModelFile, ModelManifest, ModelRef, parse_model_ref
from tiered_storage._model_sources import SourceSettings
from tiered_storage._objects import KINDS, ObjectMeta, ObjectStore, check_key, object_key
from tiered_storage._open import open_object_store, read_credentials
from tiered_storage._read_plan import ReadPlan, plan_read
from tiered_storage._s3_objects import S3ObjectStore, S3Settings
from tiered_storage._tiered import Fetched, TieredStore

__all__ = [
    "KINDS",
    "BlobStore",
    "Fetched",
    "HostModel",
    "LocalBlobStore",
    "LocalObjectStore",
    "ModelCache",
    "ModelFile",
    "ModelManifest",
    "ModelRef",
    "ObjectMeta",
    "ObjectStore",
    "ReadPlan",
    "S3ObjectStore",
    "S3Settings",
    "SourceSettings",
    "Staged",
    "TieredStore",
    "check_key",
    "object_key",
    "open_object_store",
    "parse_model_ref",
    "plan_host_evictions",
    "plan_read",
    "read_credentials",
]
