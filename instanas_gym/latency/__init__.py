"""Latency lookup tables: the table and its file (:mod:`.table`), measuring one in place
(:mod:`.measure`), and checking one against the clock (:mod:`.validation`)."""

from instanas_gym.latency.table import LatencyTable

__all__ = ["LatencyTable"]
