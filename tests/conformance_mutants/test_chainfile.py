"""The correct ``chain`` backend passes the whole conformance suite (its mutants must not)."""

from __future__ import annotations

from tests.conformance_mutants.chainfile import ChainBackend, ChainConformance


class TestChainConformance(ChainConformance):
    plugin = ChainBackend()
