"""The ``snapcore`` command line: a thin layer over :mod:`snapcore.api`.

This is the only module that prints or exits. Exit codes: 0 done; 1 the operation failed and
was undone; 2 bad usage, configuration or input, nothing touched; 3 a failure whose undo also
failed (the message lists what is left; ``snapcore recover`` is the way out); 4 busy: another
command held the domain's lock for the whole ``--lock-timeout``, nothing touched.
``run-policy`` runs many domains: 0 when each was done, skipped or busy, else the highest
exit status of the domains that failed.

Test-only: with ``SNAPCORE_TESTING=1``, ``SNAPCORE_NOW`` (epoch seconds or an ISO time with an
offset) is the time ``run-policy`` and ``snapshot-set`` judge at; without ``SNAPCORE_TESTING=1``
it is ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from snapcore._version import __version__

if TYPE_CHECKING:
    from datetime import datetime

    from snapcore.api import DomainHandle, Host
    from snapcore.apphooks import HookOutcome
    from snapcore.model import CheckpointView, Plan, ProgressEvent
    from snapcore.policy import PolicyRun

PROG = "snapcore"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds, 0 or more: {text[:40]!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Consistent snapshots of whole virtual machines on mixed storage.",
        epilog="DOMAIN is a domain file (a path) or a name looked up as DOMAINS_DIR/NAME.toml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where snapshot records live (default: $SNAPCORE_STATE_DIR or /var/lib/snapcore)",
    )
    parser.add_argument(
        "--domains-dir",
        metavar="DIR",
        help="where domain names are looked up "
        "(default: $SNAPCORE_DOMAINS_DIR or /etc/snapcore/domains)",
    )
    parser.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        type=_seconds,
        help="how long to wait for another command working on the same domain before giving "
        "up as busy, exit 4 (default: $SNAPCORE_LOCK_TIMEOUT or 60)",
    )
    parser.add_argument(
        "--hooks-dir",
        metavar="DIR",
        help="hooks run around every create, revert and delete, besides the domain file's "
        "[[hook]] (default: $SNAPCORE_HOOKS_DIR or /etc/snapcore/hooks.d)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (twice: every command run)"
    )
    parser.add_argument(
        "--disable-plugin",
        metavar="NAME",
        action="append",
        default=[],
        help="do not load plugin NAME (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "snapshot-create",
        help="create a snapshot of a domain",
        description="Create a snapshot (checkpoint) of every writable disk of DOMAIN, with its "
        "memory if it is running. CONFIGFILE uses the xl.snapshot.cfg syntax.",
    )
    p.add_argument("configfile", nargs="?", metavar="CONFIGFILE", help="snapshot config file")
    p.add_argument("-n", "--name", help="snapshot name (default: the time in epoch seconds)")
    p.add_argument(
        "-D", "--disk-only", action="store_true", help="do not save the memory of a running domain"
    )
    p.add_argument(
        "--expiry",
        metavar="WHEN",
        help="when run-policy may delete it: a duration from now (30d, 12h, 1w 2d) or an ISO time",
    )
    _add_plan_options(p)
    p.add_argument("domain", metavar="DOMAIN")

    p = sub.add_parser(
        "snapshot-list",
        help="list the snapshots of a domain",
        description="List the snapshots of DOMAIN, oldest first; '*' marks the current one.",
    )
    p.add_argument(
        "-l",
        "--long",
        action="store_true",
        help="show disks, sizes and memory image, and check each disk snapshot still exists",
    )
    p.add_argument("-n", "--name", help="show only this snapshot")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("domain", metavar="DOMAIN")

    for command, verb, text in (
        ("snapshot-delete", "delete", "Delete snapshot NAME of DOMAIN, merging its data."),
        (
            "snapshot-revert",
            "revert",
            "Revert DOMAIN to snapshot NAME; newer snapshots are kept.",
        ),
    ):
        p = sub.add_parser(command, help=f"{verb} a snapshot", description=text)
        p.add_argument("-n", "--name", required=True, help="the snapshot")
        _add_plan_options(p)
        p.add_argument("domain", metavar="DOMAIN")

    _add_policy_commands(sub)

    p = sub.add_parser(
        "recover",
        help="finish or undo an interrupted operation",
        description="Finish or undo an operation that a crashed command left half-done.",
    )
    p.add_argument(
        "--forget", action="store_true", help="drop the interrupted operation without acting on it"
    )
    p.add_argument("domain", metavar="DOMAIN")

    p = sub.add_parser(
        "check",
        help="reconcile records with storage",
        description="Check that DOMAIN's records and its storage agree (every domain in the "
        "domains dir when none is named): journal and records readable, every recorded "
        "snapshot on storage and every snapshot on storage on record, images passing their "
        "format's check, nothing left over. Changes nothing unless --repair. Exit 0: clean; "
        "1: problems found (left, or some not repaired).",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="do what is safe: recover, move unreadable files aside, remove leftovers, "
        "repair what loses no data; say what is left",
    )
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument("domains", metavar="DOMAIN", nargs="*")

    p = sub.add_parser(
        "domain-start",
        help="start a shut-off domain from its domain file",
        description="Start DOMAIN from its domain file ([qemu] argv), running or --paused.",
    )
    p.add_argument("--paused", action="store_true", help="leave its vCPUs stopped")
    p.add_argument("domain", metavar="DOMAIN")
    p = sub.add_parser("domain-stop", help="stop a running domain", description="Stop DOMAIN.")
    p.add_argument("domain", metavar="DOMAIN")
    p = sub.add_parser(
        "domain-state",
        help="say whether a domain is running, paused or shut off",
        description="Print running, paused or shutoff, as DOMAIN's hypervisor reports it.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("domain", metavar="DOMAIN")

    p = sub.add_parser("plugins", help="list loaded plugins, drivers and capabilities")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "demo",
        help="show snapcore at work on a scratch domain",
        description="Build a scratch domain with two qcow2 disks in a temporary directory, "
        "create, revert, list and delete snapshots, and check the data at each step.",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument(
        "--qemu",
        metavar="BINARY",
        default="qemu-system-x86_64",
        help="the QEMU that runs the running-domain part (default: qemu-system-x86_64 on PATH)",
    )
    return parser


def _add_policy_commands(sub: Any) -> None:
    """``snapshot-set``, ``run-policy`` and ``policy install|uninstall``."""
    p = sub.add_parser(
        "snapshot-set",
        help="change a snapshot's expiry",
        description="Give snapshot NAME of DOMAIN an expiry, after which run-policy deletes "
        "it, or take its expiry away. WHEN is a duration from now (30d, 12h, 1w 2d) or an ISO "
        "time (2026-12-24T08:00, local time without an offset; 2026-12-24T08:00+01:00).",
    )
    p.add_argument("-n", "--name", required=True, help="the snapshot")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--expiry", metavar="WHEN", help="when it expires")
    group.add_argument("--no-expiry", action="store_true", help="take its expiry away")
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.add_argument("domain", metavar="DOMAIN")

    p = sub.add_parser(
        "run-policy",
        help="take the scheduled snapshots and prune expired ones",
        description="For each DOMAIN (default: every domain file in the domains dir) with a "
        "[snapshots] table: create the snapshot of the slot due, if any, deleting first what "
        "a chain limit needs gone, then delete the snapshots the keep rules and expiry times "
        "prune. Safe to run every minute. A domain another command holds is skipped (busy). "
        "Exit 0: every domain done, skipped or busy; otherwise the highest exit status of the "
        "domains that failed (1 failed and undone, 2 bad domain file or blocked, 3 recover).",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan with reasons; change nothing"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per domain")
    p.add_argument("domains", metavar="DOMAIN", nargs="*")

    p = sub.add_parser(
        "policy",
        help="install or uninstall the systemd timer of run-policy",
        description="Write (install) or remove (uninstall) snapcore-policy.service and "
        "snapcore-policy.timer, which run 'snapcore run-policy' every minute with this "
        "command's --state-dir, --domains-dir and --hooks-dir. systemctl is not run: the "
        "command says what to run.",
    )
    policy_sub = p.add_subparsers(dest="policy_command", metavar="ACTION", parser_class=_Parser)
    policy_sub.required = True
    for action in ("install", "uninstall"):
        q = policy_sub.add_parser(action, help=f"{action} the units")
        q.add_argument("--dry-run", action="store_true", help="say what would be done")
        q.add_argument(
            "--unit-dir", metavar="DIR", help="where the units go (default: /etc/systemd/system)"
        )


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--json", action="store_true", help="print the result (or plan) as JSON")


# -- output -----------------------------------------------------------------------------------


class _Progress:
    """Shows progress events on a terminal; silent when stderr is not one."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        parts = [event.step]
        if event.vdev:
            parts.append(event.vdev)
        if event.unit == "bytes" and event.total:
            parts.append(
                f"{event.done * 100 // event.total}% "
                f"({_fmt_size(event.done)} of {_fmt_size(event.total)})"
            )
        elif event.total:
            parts.insert(0, f"[{event.done}/{event.total}]")
        if event.message:
            parts.append(event.message)
        self.stream.write("\r\033[K" + " ".join(parts))
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _print_json(obj: Any) -> None:
    if isinstance(obj, list):
        # One element a line: readable, and json's C encoder stays in use (indent= would
        # switch to the pure-Python one, several times slower on 10,000 snapshots).
        body = ",\n".join(f"  {json.dumps(item)}" for item in obj)
        print(f"[\n{body}\n]" if obj else "[]")
    else:
        print(json.dumps(obj, indent=2))


def _fmt_time(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _fmt_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _fmt_epoch_utc(epoch: int | None) -> str:
    """*epoch* in the host's local time, with its offset."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(epoch))


def _print_views(views: Sequence[CheckpointView], long: bool) -> None:
    if not views:
        print("no snapshots")
        return
    rows = [["", "NAME", "CREATED", "STATE", "MEMORY", "PARENT", "DESCRIPTION"]]
    for v in views:
        cp = v.checkpoint
        rows.append(
            [
                "*" if v.current else "",
                cp.name,
                _fmt_time(cp.creation_time),
                cp.state.value,
                "yes" if cp.memory else "no",
                cp.parent or "-",
                f"[delete unfinished] {cp.description}".rstrip() if cp.deleting else cp.description,
            ]
        )
    _print_table(rows)
    if not long:
        return
    for v in views:
        cp = v.checkpoint
        print(f"\n{cp.name}:")
        disk_rows = [["  VDEV", "DRIVER", "TYPE", "SIZE", "SNAPSHOT", "STATUS"]]
        for d in cp.disks:
            status = "MISSING" if d.vdev in v.missing else "ok"
            disk_rows.append(
                [f"  {d.vdev}", d.driver, d.kind.value, _fmt_size(d.size), d.locator, status]
            )
        _print_table(disk_rows)
        if cp.memory:
            print(f"  memory image: {cp.memory.path} ({_fmt_size(cp.memory.size)})")
        if cp.policy_slot is not None:
            print(f"  scheduled for: {_fmt_epoch_utc(cp.policy_slot)}")
        if cp.expiry is not None:
            print(f"  expires: {_fmt_epoch_utc(cp.expiry)}")
        if cp.deleting:
            print("  delete unfinished: a delete of it failed; run snapshot-delete again to finish")


def _print_plan(plan: Plan) -> None:
    print(f"plan: {plan.operation.value} snapshot {plan.name} of domain {plan.domain}")
    print(f"  domain is {plan.state.value}; memory: {'yes' if plan.memory else 'no'}")
    for i, step in enumerate(plan.steps, 1):
        who = f"{step.vdev} ({step.driver})" if step.vdev else f"domain ({step.driver})"
        kind = f" [{step.kind.value}]" if step.kind else ""
        detail = f": {step.detail}" if step.detail else ""
        print(f"  {i}. {who}: {step.action}{kind}{detail}")
    for s in plan.skipped:
        print(f"  skipped {s}")
    print("dry run: nothing was changed")


# -- commands ---------------------------------------------------------------------------------


def _host(args: argparse.Namespace, progress: _Progress | None = None) -> Host:
    from snapcore.api import Host

    return Host(
        state_dir=args.state_dir,
        domains_dir=args.domains_dir,
        disabled=args.disable_plugin,
        progress=progress,
        lock_timeout=args.lock_timeout,
        hooks_dir=args.hooks_dir,
    )


def _now() -> datetime:
    """The time: ``$SNAPCORE_NOW`` when ``$SNAPCORE_TESTING`` is ``1`` (tests only), else the
    clock."""
    from datetime import UTC, datetime

    from snapcore.errors import ConfigError

    text = os.environ.get("SNAPCORE_NOW", "").strip()
    if os.environ.get("SNAPCORE_TESTING") != "1" or not text:
        return datetime.now(UTC)
    try:
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        when = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise ConfigError(f"SNAPCORE_NOW {text[:40]!r}: not epoch seconds or an ISO time") from None
    if when.tzinfo is None:
        raise ConfigError(f"SNAPCORE_NOW {text[:40]!r}: give a UTC offset")
    return when.astimezone(UTC)


def _warn_hooks(outcomes: Sequence[HookOutcome]) -> None:
    for outcome in outcomes:
        if not outcome.ok and not outcome.fatal:
            print(f"{PROG}: warning: {outcome}", file=sys.stderr)


def _hook_failures(dom: DomainHandle) -> list[dict[str, Any]]:
    return [o.to_json() for o in dom.hook_outcomes if not o.ok and not o.fatal]


def _open(host: Host, args: argparse.Namespace) -> DomainHandle:
    return host.open_domain(args.domain)


def cmd_create(args: argparse.Namespace, host: Host) -> int:
    from snapcore.config import load_snapshot_config, merge_create_options

    file_options = load_snapshot_config(args.configfile) if args.configfile else None
    options = merge_create_options(file_options, name=args.name, disk_only=args.disk_only)
    if args.expiry is not None:
        from snapcore.policy import parse_when

        expiry = parse_when(args.expiry, _now())
        options = dataclasses.replace(options, expiry=int(expiry.timestamp()))
    dom = _open(host, args)
    if args.dry_run:
        plan = dom.plan_create(options)
        _print_json(plan.to_json()) if args.json else _print_plan(plan)
        return 0
    cp = dom.create(options)
    _warn_hooks(dom.hook_outcomes)
    if args.json:
        _print_json({**dom.get(cp.name).to_json(), "hook_failures": _hook_failures(dom)})
    else:
        disks = ", ".join(f"{d.vdev} {d.kind.value}" for d in cp.disks)
        memory = f", memory in {cp.memory.path}" if cp.memory else ""
        expires = f", expires {_fmt_epoch_utc(cp.expiry)}" if cp.expiry is not None else ""
        print(f"created snapshot {cp.name} of domain {dom.domain.name} ({disks}{memory}{expires})")
    return 0


def cmd_list(args: argparse.Namespace, host: Host) -> int:
    from snapcore.errors import SnapshotNotFoundError
    from snapcore.model import check_name

    dom = _open(host, args)
    views = dom.list(verify=args.long)
    if args.name is not None:
        check_name(args.name)
        views = [v for v in views if v.checkpoint.name == args.name]
        if not views:
            raise SnapshotNotFoundError(dom.domain.name, args.name)
    if args.json:
        _print_json([v.to_json() for v in views])
    else:
        _print_views(views, args.long)
    return 0


def cmd_change(args: argparse.Namespace, host: Host) -> int:
    from snapcore.model import check_name

    check_name(args.name)
    dom = _open(host, args)
    verb = "delete" if args.command == "snapshot-delete" else "revert"
    if args.dry_run:
        plan = dom.plan_delete(args.name) if verb == "delete" else dom.plan_revert(args.name)
        _print_json(plan.to_json()) if args.json else _print_plan(plan)
        return 0
    if verb == "delete":
        dom.delete(args.name)
        message = f"deleted snapshot {args.name} of domain {dom.domain.name}"
    else:
        dom.revert(args.name)
        message = f"reverted domain {dom.domain.name} to snapshot {args.name}"
    _warn_hooks(dom.hook_outcomes)
    if args.json:
        _print_json(
            {
                "operation": verb,
                "domain": dom.domain.name,
                "name": args.name,
                "hook_failures": _hook_failures(dom),
            }
        )
    else:
        print(message)
    return 0


def cmd_set(args: argparse.Namespace, host: Host) -> int:
    from snapcore.model import check_name
    from snapcore.policy import parse_when

    check_name(args.name)
    expiry = None if args.no_expiry else parse_when(args.expiry, _now())
    dom = _open(host, args)
    cp = dom.set_expiry(args.name, expiry)
    if args.json:
        _print_json(dom.get(cp.name).to_json())
    elif cp.expiry is None:
        print(f"snapshot {cp.name} of domain {dom.domain.name} has no expiry")
    else:
        print(f"snapshot {cp.name} of domain {dom.domain.name} expires {_fmt_epoch_utc(cp.expiry)}")
    return 0


def _print_policy_run(run: PolicyRun, dry_run: bool) -> None:
    name = run.domain
    if run.status == "skipped":
        return
    if run.status == "busy":
        print(f"{name}: busy, skipped: {run.error}")
        return
    for a in run.actions:
        if dry_run:
            print(f"{name}: would {a.action} {a.name}: {a.why}")
        elif a.error:
            print(f"{name}: {a.action} {a.name} failed: {a.error}", file=sys.stderr)
        else:
            print(f"{name}: {a.action}d {a.name}: {a.why}")
    if dry_run:
        for kept, why in run.kept:
            print(f"{name}: keep {kept}: {why.removeprefix('kept: ')}")
    if not run.actions and run.status != "failed":
        print(f"{name}: nothing to do")
    for h in run.hooks:
        print(f"{PROG}: warning: {name}: {h}", file=sys.stderr)
    if run.status == "failed" and not any(a.error for a in run.actions):
        print(f"{PROG}: error: {name}: {run.error}", file=sys.stderr)


def cmd_run_policy(args: argparse.Namespace, host: Host) -> int:
    from snapcore.errors import SnapcoreError
    from snapcore.policy import PolicyRun

    now = _now()
    names = args.domains or [str(p) for p in host.domain_files()]
    lock_timeout = args.lock_timeout if args.lock_timeout is not None else 10.0
    runs: list[PolicyRun] = []
    for name in names:
        try:
            dom = host.open_domain(name)
        except SnapcoreError as exc:
            runs.append(
                PolicyRun(
                    domain=name,
                    source=name,
                    status="failed",
                    now=now,
                    error=str(exc),
                    exit_code=exc.exit_code,
                )
            )
            if not args.json:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
            continue
        run = dom.run_policy(now=now, dry_run=args.dry_run, lock_timeout=lock_timeout)
        runs.append(run)
        if not args.json:
            _print_policy_run(run, args.dry_run)
    if args.json:
        _print_json([r.to_json() for r in runs])
    elif not names:
        print(f"no domain file in {host.domains_dir}")
    return max((r.exit_code for r in runs), default=0)


def cmd_policy(args: argparse.Namespace, host: Host) -> int:
    from snapcore.systemd import (
        DEFAULT_UNIT_DIR,
        SERVICE,
        TIMER,
        install_units,
        policy_units,
        snapcore_command,
        uninstall_units,
    )

    unit_dir = args.unit_dir or DEFAULT_UNIT_DIR
    if args.policy_command == "uninstall":
        removed = uninstall_units(unit_dir, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for path in removed:
            print(f"{verb} {path}")
        if not removed:
            print(f"no snapcore policy units in {unit_dir}")
        elif not args.dry_run:
            print(f"now run: systemctl disable --now {TIMER}; systemctl daemon-reload")
        return 0
    units = policy_units(
        snapcore_command(),
        state_dir=host.state_dir,
        domains_dir=host.domains_dir,
        hooks_dir=args.hooks_dir,  # given: passed on as given ("" for none)
    )
    if args.dry_run:
        for name, text in units.items():
            print(f"# would write {os.path.join(unit_dir, name)}:\n{text}")
        return 0
    for path in install_units(unit_dir, units):
        print(f"wrote {path}")
    print(f"now run: systemctl daemon-reload; systemctl enable --now {TIMER}")
    print(f"(it starts {SERVICE} every minute)")
    return 0


def cmd_recover(args: argparse.Namespace, host: Host) -> int:
    dom = _open(host, args)
    done = dom.recover(forget=args.forget)
    print(done or f"domain {dom.domain.name}: nothing to recover")
    return 0


def cmd_check(args: argparse.Namespace, host: Host) -> int:
    from snapcore.check import iter_problems
    from snapcore.errors import ConfigError

    names = args.domains or [str(p) for p in host.domain_files()]
    if not names:
        raise ConfigError(f"no domain named, and no domain file in {host.domains_dir}")
    reports = [host.open_domain(name).check(repair=args.repair) for name in names]
    if args.json:
        _print_json([r.to_json() for r in reports])
    else:
        for report in reports:
            for finding in report.findings:
                if finding.repaired:
                    print(
                        f"{report.domain}: {finding.subject}: {finding.problem}: repaired: "
                        f"{finding.repaired}"
                    )
            for repair in report.repairs:
                print(f"{report.domain}: repaired: {repair}")
            problems = list(iter_problems(report))
            for line in problems:
                print(line)
            if not problems:
                print(f"{report.domain}: clean ({report.checkpoints} checkpoints)")
    return 0 if all(r.clean for r in reports) else 1


def cmd_domain(args: argparse.Namespace, host: Host) -> int:
    dom = _open(host, args)
    name = dom.domain.name
    if args.command == "domain-start":
        state = dom.start(paused=args.paused)
        print(f"started domain {name} ({state.value})")
    elif args.command == "domain-stop":
        dom.stop()
        print(f"stopped domain {name}")
    elif args.json:
        _print_json({"domain": name, "state": dom.state().value})
    else:
        print(dom.state().value)
    return 0


def cmd_plugins(args: argparse.Namespace, host: Host) -> int:
    records = host.plugin_records()
    if args.json:
        _print_json(
            [
                {
                    "name": r.name,
                    "source": r.source,
                    "version": r.version,
                    "backend": r.backend.to_json() if r.backend else None,
                    "hypervisor": r.hypervisor.to_json() if r.hypervisor else None,
                    "hook_api": f"{r.api[0]}.{r.api[1]}",
                    "deprecated": r.deprecated,
                }
                for r in records
            ]
        )
        return 0
    rows = [["PLUGIN", "PROVIDES", "STATUS", "CAPABILITIES", "SOURCE"]]
    for r in records:
        if r.backend:
            b = r.backend
            provides = f"driver {b.driver}"
            ok = b.available
            reason = b.unavailable_reason
            caps = ",".join(sorted(k.value for k in b.kinds))
            if b.live:
                caps += ",live"
            if b.revert_any:
                caps += ",revert-any"
            if b.tool_version:
                caps += f" ({b.tool_version})"
        elif r.hypervisor:
            h = r.hypervisor
            provides = f"hypervisor {h.name}"
            ok = h.available
            reason = h.unavailable_reason
            caps = "memory" if h.memory else "-"
        else:
            provides, ok, reason, caps = "hooks", True, None, "-"
        status = "ok" if ok else f"unavailable: {reason}"
        source = f"{r.source} {r.version}".strip()
        rows.append([r.name, provides, status, caps, source])
    _print_table(rows)
    for r in records:
        if r.deprecated:
            print(f"{PROG}: plugin {r.name!r} is deprecated: {r.deprecated}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, host: Host) -> int:
    from snapcore.demo import run_demo

    def say(line: str) -> None:
        print(line, flush=True)

    run_demo(say, keep=args.keep, qemu=args.qemu)
    return 0


COMMANDS = {
    "snapshot-create": cmd_create,
    "snapshot-list": cmd_list,
    "snapshot-delete": cmd_change,
    "snapshot-revert": cmd_change,
    "snapshot-set": cmd_set,
    "run-policy": cmd_run_policy,
    "policy": cmd_policy,
    "recover": cmd_recover,
    "check": cmd_check,
    "domain-start": cmd_domain,
    "domain-stop": cmd_domain,
    "domain-state": cmd_domain,
    "plugins": cmd_plugins,
    "demo": cmd_demo,
}


def _place_positionals(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> None:
    """Let ``snapshot-create CONFIGFILE -n NAME DOMAIN`` work: argparse alone would take the
    first positional as DOMAIN and reject the one after the options."""
    unknown = [e for e in extra if e.startswith("-")]
    if args.command != "snapshot-create" or unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    positionals = [p for p in (args.configfile, args.domain) if p is not None] + extra
    if len(positionals) > 2:
        parser.error(f"unrecognized arguments: {' '.join(positionals[2:])}")
    args.configfile, args.domain = positionals


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _place_positionals(parser, args, extra)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format=f"{PROG}: %(levelname)s: %(message)s")
    logging.getLogger("sh").setLevel(logging.WARNING)  # its per-process chatter is not ours
    # qemu.qmp logs a lost connection at ERROR before our own error says it in one line
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if args.verbose >= 2 else logging.CRITICAL)
    progress = _Progress(sys.stderr)
    from snapcore.errors import SnapcoreError

    try:
        host = _host(args, progress)
        return COMMANDS[args.command](args, host)
    except SnapcoreError as exc:
        progress.clear()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        for source in (exc, getattr(exc, "cause", None)):
            for note in getattr(source, "__notes__", ()):
                print(f"{PROG}: {note}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        progress.clear()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        progress.clear()


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
