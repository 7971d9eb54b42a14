"""Deep hashing: losses (DHD, DPN, OrthoHash), one trainer and one encoder."""

from .trainer import LOSSES, HashingSettings, encode, train_hashing

__all__ = ["LOSSES", "HashingSettings", "encode", "train_hashing"]
