"""Deliberately broken storage plugins, to measure the conformance suite by mutation.

``chainfile`` is a small, correct, file-based backend with external snapshots (a pure-Python
miniature of qcow2 overlays) and broken copies of it; ``rawcopy_mutants`` holds broken copies of
the example plugin, examples/snapcore-rawcopy. ``test_mutants`` checks that the suite kills
every one of them, and that every test of the suite kills at least one.
"""
