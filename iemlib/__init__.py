"""iemlib: dataset condensation for deep hashing retrieval (IEM and its baselines)."""

__version__ = "0.1.0"
