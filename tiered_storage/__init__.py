"""tiered_storage."""
