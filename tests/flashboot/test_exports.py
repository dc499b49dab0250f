"""The public surface of flashboot stays small and deliberate."""

from __future__ import annotations

import flashboot


def test_exported_names() -> None:
    assert sorted(flashboot.__all__) == sorted(
        [
            "ENV_DIR",
            "ENV_OWNER",
            "ENV_REPORT_DIR",
            "Holdings",
            "ImageIndex",
            "Keeper",
            "KeeperConfig",
            "LoadStats",
            "ModelHolding",
            "StageTiming",
            "T1Backing",
            "TensorEntry",
            "convert_safetensors",
            "last_load_stats",
            "load",
            "page_in",
            "page_out",
            "read_boot",
            "read_index",
            "release",
            "source_stamp",
            "t1_advice",
            "write_image",
        ]
    )
    assert all(hasattr(flashboot, name) for name in flashboot.__all__)
