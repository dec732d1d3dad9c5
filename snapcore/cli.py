"""The ``snapcore`` command line: a thin layer over :mod:`snapcore.api`.

This is the only module that prints or exits. Exit codes: 0 done; 1 the operation failed and
was undone; 2 bad usage, configuration or input, nothing touched; 3 a failure whose undo also
failed (the message lists what is left; ``snapcore recover`` is the way out); 4 busy: another
command held the domain's lock for the whole ``--lock-timeout``, nothing touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from snapcore._version import __version__

if TYPE_CHECKING:
    from snapcore.api import DomainHandle, Host
    from snapcore.model import CheckpointView, Plan, ProgressEvent

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
    return parser


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
                cp.description,
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
    )


def _open(host: Host, args: argparse.Namespace) -> DomainHandle:
    return host.open_domain(args.domain)


def cmd_create(args: argparse.Namespace, host: Host) -> int:
    from snapcore.config import load_snapshot_config, merge_create_options

    file_options = load_snapshot_config(args.configfile) if args.configfile else None
    options = merge_create_options(file_options, name=args.name, disk_only=args.disk_only)
    dom = _open(host, args)
    if args.dry_run:
        plan = dom.plan_create(options)
        _print_json(plan.to_json()) if args.json else _print_plan(plan)
        return 0
    cp = dom.create(options)
    if args.json:
        _print_json(dom.get(cp.name).to_json())
    else:
        disks = ", ".join(f"{d.vdev} {d.kind.value}" for d in cp.disks)
        memory = f", memory in {cp.memory.path}" if cp.memory else ""
        print(f"created snapshot {cp.name} of domain {dom.domain.name} ({disks}{memory})")
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
    if args.json:
        _print_json({"operation": verb, "domain": dom.domain.name, "name": args.name})
    else:
        print(message)
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

    run_demo(say, keep=args.keep)
    return 0


COMMANDS = {
    "snapshot-create": cmd_create,
    "snapshot-list": cmd_list,
    "snapshot-delete": cmd_change,
    "snapshot-revert": cmd_change,
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
