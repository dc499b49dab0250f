"""FlashBoot's host side, run by noded: the keeper of one host's T1 and T2 tiers.  Never imports torch.

The keeper (``Keeper``) owns the stores, one per owner (``_owners.py``), keeps them together within
the host's budgets, repairs their indexes after a restart (``_repair.py``) and reports what they
hold.  Workers write their own store's files, so nothing here trusts them (``flashboot._safe``);
what both sides share (image format, store layout, locks) sits at the package root.
"""

from ._keeper import Holdings, Keeper, KeeperConfig, ModelHolding

__all__ = ["Holdings", "Keeper", "KeeperConfig", "ModelHolding"]
