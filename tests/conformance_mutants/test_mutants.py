"""The conformance suite measured by mutation: each deliberately broken plugin of this package
must fail the suite test(s) named for it, with the words given, and every test of the suite
must fail for some mutant here or in tests/test_testing.py (the in-memory ones).

Each mutant runs through pytester, as a plugin author's test module would run the suite.
"""

from __future__ import annotations

import pytest

from snapcore.testing import BackendConformance
from tests.test_testing import BROKEN

pytest_plugins = ["pytester"]

#: (module, mutant, suite tests that must fail, words each failure must hold)
MUTANTS: list[tuple[str, str, tuple[str, ...], str]] = [
    (
        "chainfile",
        "DeleteDropsLayer",
        ("test_delete_one_layer_keeps_the_others", "test_delete_every_layer_in_turn"),
        "does not hold the data 'layer",
    ),
    (
        "chainfile",
        "DeleteMergesIntoDiskOnly",
        ("test_delete_after_revert_keeps_every_branch",),
        "chain is broken",
    ),
    (
        "chainfile",
        "CreateCheckIgnoresTarget",
        ("test_create_check_refuses_an_existing_target",),
        "allows a snapshot into existing",
    ),
    (
        "chainfile",
        "CreateCheckTakesALock",
        ("test_looking_changes_nothing", "test_create_check_passes_on_fresh_disk"),
        "disk_snapshot_create_check changed files",
    ),
    (
        "chainfile",
        "CreateCheckIgnoresChain",
        ("test_create_check_blocks_a_broken_chain",),
        "finds nothing wrong with a broken chain",
    ),
    (
        "chainfile",
        "ListCrashesOnBrokenChain",
        ("test_list_reports_a_broken_chain",),
        "broke the hook contract*RuntimeError",
    ),
    (
        "chainfile",
        "ListHidesBrokenChain",
        ("test_list_reports_a_broken_chain",),
        "instead of raising a BackendError",
    ),
    (
        "chainfile",
        "RevertNotAtomic",
        ("test_failed_revert_is_all_or_nothing",),
        "the disk cannot be read",
    ),
    (
        "chainfile",
        "CreateLeavesPartial",
        ("test_failed_create_leaves_nothing",),
        "files are left behind",
    ),
    (
        "chainfile",
        "AbortOnlyUndoesFinished",
        ("test_failed_create_leaves_nothing",),
        "files are left behind",
    ),
    (
        "chainfile",
        "RevertWritesInPlace",
        ("test_killed_revert_is_all_or_nothing",),
        "after a kill after file operation #* (builtins.open(*vda.chain)) returned*"
        "the disk cannot be read",
    ),
    (
        "chainfile",
        "CreateScratchOfItsOwn",
        ("test_killed_create_leaves_nothing",),
        "files are left behind: ?'*vda.chain.*.new'?",
    ),
    (
        "chainfile",
        "DeleteMergesInPlace",
        ("test_killed_delete_keeps_every_other_layer",),
        "after a kill after file operation #* (builtins.open(*vda.s2.snapshot)) returned*"
        "the disk cannot be read",
    ),
    (
        "chainfile",
        "DeleteRepointsFirst",
        (
            "test_failed_delete_keeps_every_other_layer",
            "test_killed_delete_keeps_every_other_layer",
        ),
        "does not hold the data 'layer1'",
    ),
    (
        "rawcopy_mutants",
        "ClaimsEverything",
        ("test_claims_only_its_own_format",),
        "claims files of other formats: ?'qcow2', 'vhd', 'vmdk'?",
    ),
    (
        "rawcopy_mutants",
        "ClaimAnswersTrue",
        ("test_claims_only_its_own_format", "test_every_hook_answers_in_its_type"),
        "a claim is None or 'rawcopy'",
    ),
    (
        "rawcopy_mutants",
        "CreateCheckMakesDir",
        ("test_create_check_passes_on_fresh_disk",),
        "vda.raw.snapcore was created",
    ),
    (
        "rawcopy_mutants",
        "PlanOnTwoLines",
        ("test_every_hook_answers_in_its_type",),
        "not one line",
    ),
    (
        "rawcopy_mutants",
        "RevertUnlinkThenRename",
        ("test_failed_revert_is_all_or_nothing",),
        "the disk cannot be read",
    ),
    (
        "rawcopy_mutants",
        "CreateLeavesPartial",
        ("test_failed_create_leaves_nothing",),
        "files are left behind",
    ),
    (
        "rawcopy_mutants",
        "RevertTruncatesThenCopies",
        ("test_killed_revert_is_all_or_nothing",),
        "after a kill * in disk_snapshot_revert: the disk holds neither its data from before "
        "nor the snapshot's",
    ),
]

#: The mutants only the kill variant of fault injection finds: each passes the suite test that
#: raises at the same points (named here), and fails the one that kills there (in MUTANTS).
KILL_ONLY: list[tuple[str, str, str]] = [
    ("chainfile", "RevertWritesInPlace", "test_failed_revert_is_all_or_nothing"),
    ("chainfile", "CreateScratchOfItsOwn", "test_failed_create_leaves_nothing"),
    ("chainfile", "DeleteMergesInPlace", "test_failed_delete_keeps_every_other_layer"),
    ("rawcopy_mutants", "RevertTruncatesThenCopies", "test_failed_revert_is_all_or_nothing"),
]

_BASES = {"chainfile": "ChainConformance", "rawcopy_mutants": "RawcopyConformance"}


def _run_suite(pytester: pytest.Pytester, module: str, plugin: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(
        test_mutant=f"""
        from tests.conformance_mutants import {module}

        class TestMutant({module}.{_BASES[module]}):
            plugin = {module}.{plugin}()
        """
    )
    # Without hypothesis's plugin, which re-imports much of hypothesis in every inner run.
    return pytester.runpytest("-p", "no:hypothesispytest", "-p", "no:randomly", *args)


@pytest.mark.parametrize(
    ("module", "mutant", "tests", "reason"), MUTANTS, ids=[f"{m[0]}.{m[1]}" for m in MUTANTS]
)
def test_the_suite_kills_the_mutant(
    pytester: pytest.Pytester, module: str, mutant: str, tests: tuple[str, ...], reason: str
) -> None:
    result = _run_suite(pytester, module, mutant, "-k", " or ".join(tests))
    assert result.parseoutcomes().get("failed", 0) >= 1, result.stdout.str()
    for test in tests:
        result.stdout.fnmatch_lines([f"FAILED test_mutant.py::TestMutant::{test}*"])
    result.stdout.fnmatch_lines([f"*{reason}*"])


@pytest.mark.parametrize(
    ("module", "mutant", "test"), KILL_ONLY, ids=[f"{m[0]}.{m[1]}" for m in KILL_ONLY]
)
def test_only_a_kill_finds_the_mutant(
    pytester: pytest.Pytester, module: str, mutant: str, test: str
) -> None:
    result = _run_suite(pytester, module, mutant, "-k", test)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 1, result.stdout.str()
    assert any(m[1] == mutant and m[0] == module for m in MUTANTS)


@pytest.mark.parametrize("module", sorted(_BASES))
def test_the_unbroken_backend_passes(pytester: pytest.Pytester, module: str) -> None:
    plugin = "ChainBackend" if module == "chainfile" else "Rawcopy"
    result = _run_suite(pytester, module, plugin)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 20


def test_every_suite_test_kills_a_mutant() -> None:
    suite = {name for name in dir(BackendConformance) if name.startswith("test_")}
    killers = {test for _, _, tests, _ in MUTANTS for test in tests}
    killers |= {test for test, _, _ in BROKEN}
    assert suite - killers == set(), "suite tests that no mutant fails"
    assert killers - suite == set(), "mutants named for tests the suite does not have"
