"""MIG profile catalogs, one TOML file per SKU (package data; see mig.load_catalog)."""
