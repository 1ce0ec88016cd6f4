"""The ``meter`` command: ``devices``, ``run -- CMD``, ``serve``, ``zones``, ``calibrate``."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from meter import __version__, _child, config
from meter.core import Meter, check_interval, options_from_env
from meter.errors import ConfigError, MeterError
from meter.measurement import Measurement

if TYPE_CHECKING:
    from meter.exporters.jsonl import JsonlWriter

log = logging.getLogger("meter")


def _err(msg: str) -> None:
    print(f"meter: {msg}", file=sys.stderr)


def _build_meter(args: argparse.Namespace) -> Meter:
    opts = options_from_env()
    if getattr(args, "interval", None) is not None:
        opts["interval_s"] = check_interval(args.interval, "--interval")
    if getattr(args, "gpus", None):
        try:
            opts["gpus"] = [int(x) for x in args.gpus.split(",") if x.strip()]
        except ValueError:
            from meter.errors import ConfigError

            raise ConfigError(f"--gpus {args.gpus!r} must be ordinals like 0,1") from None
    if getattr(args, "no_cpu", False):
        opts["cpu"] = False
    if getattr(args, "zone", None):
        opts["zone"] = args.zone
    if getattr(args, "pue", None) is not None:
        opts["pue"] = args.pue
    if getattr(args, "gpu_correction", None):
        opts["gpu_correction"] = args.gpu_correction
    return Meter(**opts)


# -- meter devices ---------------------------------------------------------------------------


def cmd_devices(args: argparse.Namespace) -> int:
    from meter.devices import discover

    opts = options_from_env()
    found = discover(
        gpus=opts.get("gpus"),
        cpu=opts.get("cpu", True),
        cpu_tdp_w=opts.get("cpu_tdp_w"),
        rapl_psys=args.psys,
    )
    if args.json:
        out = {
            "devices": [
                {
                    "key": d.info.key,
                    "kind": d.info.kind,
                    "model": d.info.model,
                    "method": d.info.method,
                    "uuid": d.info.uuid,
                    "index": d.info.index,
                    "counted": d.info.counted,
                    "notes": list(d.info.notes),
                }
                for d in found.devices
            ],
            "unavailable": [
                {"key": u.key, "kind": u.kind, "reason": u.reason, "fix": u.fix}
                for u in found.unavailable
            ],
            "warnings": found.warnings,
            "notes": found.notes,
        }
        print(json.dumps(out, indent=2))
    else:
        if found.devices:
            rows = [("device", "method", "model", "uuid")]
            rows += [
                (d.info.key, d.info.method, d.info.model, d.info.uuid or "-") for d in found.devices
            ]
            _print_table(rows)
            for d in found.devices:
                for note in d.info.notes:
                    print(f"  {d.info.key}: {note}")
        else:
            print("no device can be metered here")
        if found.unavailable:
            print("\nnot available:")
            for u in found.unavailable:
                print(f"  {u.key}: {u.reason}")
                if u.fix:
                    print(f"    fix: {u.fix}")
        shown = {note for d in found.devices for note in d.info.notes}
        for note in found.notes:
            if note not in shown:
                print(f"\nnote: {note}")
        for w in found.warnings:
            print(f"\nwarning: {w}")
    for d in found.devices:
        d.close()
    return 0


def _print_table(rows: Sequence[Sequence[str]], file: Any = None) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        line = "  ".join(
            str(c).rjust(w) if _numeric(c) else str(c).ljust(w)
            for c, w in zip(r, widths, strict=True)
        )
        print(line.rstrip(), file=file or sys.stdout)


def _numeric(c: object) -> bool:
    try:
        float(str(c))
    except ValueError:
        return False
    return True


# -- meter run -------------------------------------------------------------------------------


def summary_table(m: Measurement, title: str) -> list[list[str]]:
    rows = [["device", "method", "energy_J", "avg_W", "peak_W", "model"]]
    for key, d in m.devices.items():
        flag = "" if d.counted else " (not in total)"
        flag += " ~" if d.approximate else ""
        flag += f" FAILED: {d.error}" if d.error else ""
        rows.append(
            [
                key,
                d.method,
                f"{d.energy_j:.1f}",
                f"{d.avg_power_w:.1f}",
                f"{d.peak_power_w:.1f}",
                d.model + flag,
            ]
        )
    rows.append(["total", "", f"{m.energy_j:.1f}", f"{m.avg_power_w:.1f}", "", title])
    return rows


def print_summary(m: Measurement, title: str, exit_code: int | None = None) -> None:
    err = sys.stderr
    code = "" if exit_code is None else f", exit code {exit_code}"
    print(f"\nmeter: {title}: {m.duration_s:.2f} s{code}", file=err)
    _print_table(summary_table(m, ""), file=err)
    if m.dynamic_energy_j is not None:
        print(f"dynamic (above idle): {m.dynamic_energy_j:.1f} J", file=err)
    if m.co2e_g is not None and m.carbon is not None:
        c = m.carbon
        mean = c.get("intensity_g_per_kwh")
        mean_text = f"{mean:.0f} g/kWh" if mean is not None else "n/a"
        marginal = ", marginal" if c.get("marginal") else ""
        print(
            f"CO2e location-based: {m.co2e_g:.3f} g  (zone {c['zone']} from {c['zone_from']}, "
            f"{c['provider']}, {mean_text}{marginal}, PUE {c['pue']:g})",
            file=err,
        )
        if m.co2e_market_g is not None:
            print(
                f"CO2e market-based:   {m.co2e_market_g:.3f} g  ({c.get('market_basis')})",
                file=err,
            )
        if m.embodied_co2e_g is not None:
            print(
                f"CO2e embodied:       {m.embodied_co2e_g:.3f} g  (manufacturing, amortised)",
                file=err,
            )
        for fallback in c.get("fallbacks", ()):
            print(f"carbon fallback: {fallback}", file=err)
    methods = sorted(m.methods)
    if "estimated" in methods:
        print(
            "note: 'estimated' rows are a model (TDP x utilisation), not a measurement; "
            "see `meter devices`",
            file=err,
        )
    if "simulated" in methods:
        print(
            "note: 'simulated' rows come from simulated GPUs (METER_SIMULATE_GPUS), not hardware",
            file=err,
        )
    if m.approximate:
        print(
            "note: '~' marks figures shorter than a counter update or before its phase "
            "lock (power x time)",
            file=err,
        )


def _terminal_delivers_sigint() -> bool:
    """Whether Ctrl-C from a terminal already reaches the child (same foreground group).

    The command runs in meter's process group, also under the guardian (`meter._child`).
    """
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


# sysexits.h EX_IOERR: the command succeeded, but its record could not go to --output.
EXIT_RECORD_NOT_SAVED = 74


def _open_output(path: str) -> JsonlWriter:
    """The --output writer, once it is known that a record can be appended there.

    Checked before the command starts, so that a record is never found unwritable only after
    hours of training. The file is opened with the writer's own flags and closed, which creates
    it (empty) if it does not exist, as the first write would.
    """
    from meter.exporters.jsonl import JsonlWriter

    writer = JsonlWriter(path)  # a missing folder fails here, with how to fix it
    if os.path.isdir(path):
        example = os.path.join(path, "runs.jsonl")
        raise ConfigError(
            f"--output {path} is a folder; give a file, e.g. --output {example}",
            setting="--output",
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM) and os.path.exists(path):
            fix = f"make it writable (chmod u+w {path}) or choose another --output file"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            folder = os.path.dirname(os.path.abspath(path))
            fix = f"folder {folder} is not writable: choose another --output file"
        else:
            fix = "choose another --output file"
        raise ConfigError(
            f"cannot append to --output {path}: {exc.strerror or exc}; {fix}", setting="--output"
        ) from None
    os.close(fd)
    return writer


def _fallback_output() -> Path:
    """Where a run's record goes when --output fails at the end of the run:
    ``$XDG_STATE_HOME/meter/runs-fallback.jsonl``, by default
    ``~/.local/state/meter/runs-fallback.jsonl`` (a place that outlives a reboot)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "meter" / "runs-fallback.jsonl"


def _save_record(writer: JsonlWriter, record: dict[str, Any]) -> bool:
    """Append the run's record to --output, else to `_fallback_output`, else print it to stderr.

    True when it reached --output.
    """
    from meter.exporters.jsonl import JsonlWriter

    try:
        writer.write(record)
        return True
    except OSError as exc:
        failed = f"could not append the run's record to {writer.path} ({exc.strerror or exc})"
    record = {**record, "intended_output": str(writer.path)}
    try:
        fallback = _fallback_output()
    except RuntimeError as exc:  # no home directory to put it in
        problem = f"{failed}, and there is no fallback file ({exc})"
    else:
        try:
            fallback.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            JsonlWriter(fallback).write(record)
        except OSError as exc:
            problem = f"{failed} nor to {fallback} ({exc.strerror or exc})"
        else:
            _err(f"{failed}; appended it to {fallback} instead")
            return False
    _err(f"{problem}; here it is:")
    print(json.dumps(record, separators=(",", ":"), default=str), file=sys.stderr)
    return False


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _err("nothing to run: give a command after --, e.g. `meter run -- python train.py`")
        return 2
    writer = _open_output(args.output) if args.output else None
    compare = [z.strip() for z in (args.compare_zones or "").split(",") if z.strip()]
    m = _build_meter(args)
    if compare:
        from meter.carbon.accounting import compare_zones

        compare_zones(0.0, compare)  # unknown zones fail now, before the command runs
    m.start()
    try:
        exporters = _start_run_exporters(args, m)
    except BaseException:
        m.close()
        raise
    try:
        # On Linux under a guardian: if meter dies, even by SIGKILL, so does the command,
        # with everything it started (`meter._child`).
        child = _child.start(command)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            _err(f"command not found: {command[0]}")
        elif isinstance(exc, PermissionError):
            _err(f"permission denied: {command[0]}")
        else:
            _err(f"cannot run {command[0]}: {exc.strerror or exc}")
        _stop_run_exporters(exporters)
        m.close()
        return 127 if isinstance(exc, FileNotFoundError) else 126

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return  # the terminal sent it to the whole foreground group, child included
        child.send_signal(signum)

    try:
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                try:
                    exit_code = child.wait()
                    break
                except KeyboardInterrupt:  # pragma: no cover - handler above replaces it
                    continue
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    finally:
        child.close()  # on an exception in meter, the guardian kills the command
    name = args.name or os.path.basename(command[0])
    result = m.measure_since_start(name, error=None if exit_code == 0 else f"exit code {exit_code}")
    m.refresh()  # exporters read the published state: make it the end of the run
    _stop_run_exporters(exporters)  # the final push happens here, before the meter stops
    m.close()
    title = " ".join(command)
    print_summary(result, title, exit_code)
    prices = _print_comparison(result, compare) if compare else []
    if writer is not None:
        record = result.to_dict()
        record.update(
            {
                "kind": "run",
                "command": command,
                "exit_code": exit_code,
                "host": socket.gethostname(),
                "interval_s": m.interval_s,
                "meter_version": __version__,
            }
        )
        if prices:
            record["compare_zones"] = prices
        if not _save_record(writer, record) and exit_code == 0:
            return EXIT_RECORD_NOT_SAVED
    return exit_code


def _print_comparison(m: Measurement, zones: list[str]) -> list[dict[str, Any]]:
    """What-if: the run's energy priced in other zones (embedded yearly data, location-based)."""
    from meter.carbon.accounting import compare_zones

    pue = m.carbon["pue"] if m.carbon else 1.0
    prices = compare_zones(m.energy_j, zones, pue=pue)
    rows = [["zone", "name", "g/kWh", "CO2e_g", "source"]]
    rows += [[p.zone, p.name, f"{p.g_per_kwh:.0f}", f"{p.co2e_g:.3f}", p.source] for p in prices]
    print(f"\nthe same {m.energy_j:.1f} J elsewhere (PUE {pue:g}):", file=sys.stderr)
    _print_table(rows, file=sys.stderr)
    return [
        {"zone": p.zone, "g_per_kwh": p.g_per_kwh, "co2e_g": p.co2e_g, "source": p.source}
        for p in prices
    ]


def _read_basic_auth(path: str | None) -> dict[str, str] | None:
    if not path:
        return None
    from meter.exporters.prometheus import load_basic_auth

    return load_basic_auth(path)


def _start_run_exporters(args: argparse.Namespace, m: Meter) -> list[Any]:
    """The Prometheus server and Pushgateway pusher ``meter run`` was asked for."""
    started: list[Any] = []
    try:
        if args.prometheus_port is not None:
            from meter.exporters.prometheus import start_http_server

            server = start_http_server(m, args.prometheus_port, args.prometheus_addr)
            started.append(server)
            print(f"meter: metrics at {server.url}", file=sys.stderr)
        if args.push_gateway:
            from meter.exporters.prometheus import Pusher

            users = _read_basic_auth(args.push_basic_auth_file)
            auth = next(iter(users.items())) if users else None
            pusher = Pusher(
                m,
                args.push_gateway,
                job=args.push_job,
                interval_s=check_interval(args.push_interval, "--push-interval"),
                basic_auth=auth,
            )
            started.append(pusher.start())
    except BaseException:
        _stop_run_exporters(started, final_push=False)
        raise
    return started


def _stop_run_exporters(started: list[Any], final_push: bool = True) -> None:
    from meter.exporters.prometheus import Pusher

    for exporter in reversed(started):
        if isinstance(exporter, Pusher):
            if not exporter.close(final_push=final_push) and final_push:
                _err(f"the final push to the Pushgateway failed: {exporter.last_error}")
        else:
            exporter.close()


# -- meter serve -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """A node exporter: all GPUs, CPU and DRAM, continuously, until SIGTERM or SIGINT."""
    import threading

    from meter.exporters.prometheus import start_http_server

    if bool(args.tls_cert) != bool(args.tls_key):
        _err("give both --tls-cert and --tls-key to serve HTTPS")
        return 2
    users = _read_basic_auth(args.basic_auth_file)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        m = _build_meter(args)
        try:
            if not m.devices:
                _err("no device can be metered here (see `meter devices`); serving meter_info only")
            m.start()
            server = start_http_server(
                m,
                args.port,
                args.addr,
                certfile=args.tls_cert,
                keyfile=args.tls_key,
                basic_auth=users,
            )
            try:
                devices = ", ".join(f"{d.key} ({d.method})" for d in m.devices) or "none"
                auth = ", basic auth" if users else ""
                print(f"meter: serving {server.url}{auth}; devices: {devices}", file=sys.stderr)
                while not stop.wait(1.0):
                    pass
            finally:
                server.close()
        finally:
            m.close()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if received:
        name = signal.Signals(received[0]).name
        print(f"meter: {name} received, stopped", file=sys.stderr)
    return 0


def cmd_zones(args: argparse.Namespace) -> int:
    from meter.carbon.cli_zones import zones_command

    return zones_command(args.query, as_json=args.json)


# -- meter calibrate -------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    from meter import idle

    if args.seconds <= 0:
        _err("--seconds must be positive, e.g. --seconds 10")
        return 2
    m = _build_meter(args)
    if not m.devices:
        _err("no device to calibrate (see `meter devices`)")
        return 1
    print(f"measuring idle power for {args.seconds:g} s: keep the machine idle...", file=sys.stderr)
    m.wait_ready()
    with m.measure("idle") as w:
        time.sleep(args.seconds)
    m.close()
    assert w.result is not None
    watts = {k: d.avg_power_w for k, d in w.result.devices.items()}
    path = idle.save(m.devices, watts, w.result.duration_s, args.file)
    rows = [["device", "method", "idle_W"]]
    rows += [[k, d.method, f"{d.avg_power_w:.1f}"] for k, d in w.result.devices.items()]
    _print_table(rows)
    print(f"saved to {path} (windows now report dynamic energy above these baselines)")
    return 0


# -- meter dashboard -------------------------------------------------------------------------


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Print the Grafana dashboard JSON (or write it to --output) for Grafana's Import."""
    from meter.exporters.grafana import dashboard_json

    text = dashboard_json()
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            _err(f"could not write {args.output}: {exc.strerror or exc}")
            return 1
        print(
            f"meter: wrote {args.output}; import it in Grafana: Dashboards > Import",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


# -- entry point -----------------------------------------------------------------------------


def _from(name: str) -> str:
    """A flag's help suffix: the variable it mirrors and its default (`meter.config`)."""
    declared = config.setting(name)
    default = f", default {declared.default}" if declared.default else ""
    return f" (env {name}{default})"


def _device_options() -> argparse.ArgumentParser:
    """The options shared by the commands that meter devices (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("devices")
    group.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="sampling interval, seconds" + _from("METER_INTERVAL_S"),
    )
    group.add_argument(
        "--gpus", default=None, metavar="0,1", help="GPU ordinals to meter" + _from("METER_GPUS")
    )
    group.add_argument(
        "--no-cpu", action="store_true", help="do not meter CPU/DRAM" + _from("METER_NO_CPU")
    )
    group.add_argument(
        "--gpu-correction",
        default=None,
        metavar="auto|FAMILY",
        help="undo the published GPU sensor gain/offset (a100, rtx3090, rtx4090, rtxa5000), "
        "labelled when on" + _from("METER_GPU_CORRECTION"),
    )
    return parent


def _carbon_options() -> argparse.ArgumentParser:
    """The carbon options shared by the commands that price energy (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("carbon")
    group.add_argument(
        "--zone",
        default=None,
        metavar="Z",
        help="grid zone, e.g. DE, US-CAL-CISO, aws:us-east-1" + _from("METER_ZONE"),
    )
    group.add_argument(
        "--pue",
        type=float,
        default=None,
        metavar="P",
        help="data-centre power usage effectiveness" + _from("METER_PUE"),
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meter",
        description="Live energy metering of GPUs and CPUs (NVML, RAPL).",
    )
    p.add_argument("--version", action="version", version=f"meter {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    d = sub.add_parser("devices", help="list the devices that can be metered, and why not others")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--psys", action="store_true", help="also list the RAPL psys domain")
    d.set_defaults(func=cmd_devices)

    devices_opts = _device_options()
    carbon_opts = _carbon_options()
    r = sub.add_parser(
        "run",
        help="run a command and meter it",
        parents=[devices_opts, carbon_opts],
        usage=(
            "meter run [--interval S] [--output FILE.jsonl] [--zone Z] [--compare-zones Z1,Z2]"
            " [--prometheus-port P] [--push-gateway URL] -- CMD [ARGS...]"
        ),
    )
    r.add_argument("--output", "-o", default=None, help="append one JSON record per run")
    r.add_argument("--name", default=None, help="name of the run in the record")
    r.add_argument(
        "--compare-zones",
        default=None,
        metavar="Z1,Z2",
        help="also price the run's energy in these zones, e.g. FR,PL,US-TEX-ERCO",
    )
    r.add_argument(
        "--prometheus-port",
        type=int,
        default=None,
        metavar="P",
        help="serve Prometheus metrics on this port while the command runs",
    )
    r.add_argument(
        "--prometheus-addr",
        default="127.0.0.1",
        metavar="A",
        help="bind address for --prometheus-port (127.0.0.1)",
    )
    r.add_argument(
        "--push-gateway",
        default=None,
        metavar="URL",
        help="push metrics to this Prometheus Pushgateway periodically and at the end",
    )
    r.add_argument("--push-job", default="meter", help="Pushgateway job name (meter)")
    r.add_argument(
        "--push-interval", type=float, default=15.0, metavar="S", help="seconds between pushes (15)"
    )
    r.add_argument(
        "--push-basic-auth-file",
        default=None,
        metavar="F",
        help="file with user:password for the Pushgateway",
    )
    r.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    r.set_defaults(func=cmd_run)

    from meter.exporters.ports import DEFAULT_ADDR, DEFAULT_PORT

    s = sub.add_parser(
        "serve",
        help="Prometheus exporter: all devices, continuously, until SIGTERM",
        parents=[devices_opts, carbon_opts],
        description=(
            "Serve energy, power and CO2e of every GPU, CPU and DRAM at /metrics until SIGTERM "
            f"or SIGINT. The default port {DEFAULT_PORT} clashes with no common exporter "
            "(node_exporter 9100, dcgm-exporter 9400, ...)."
        ),
    )
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    s.add_argument(
        "--addr", default=DEFAULT_ADDR, help=f"bind address ({DEFAULT_ADDR}; 0.0.0.0 for all)"
    )
    s.add_argument("--tls-cert", default=None, metavar="F", help="PEM certificate: serve HTTPS")
    s.add_argument("--tls-key", default=None, metavar="F", help="PEM private key of --tls-cert")
    s.add_argument(
        "--basic-auth-file",
        default=None,
        metavar="F",
        help="require basic auth: a file of user:password lines (keep it chmod 600)",
    )
    s.set_defaults(func=cmd_serve)

    z = sub.add_parser("zones", help="list grid zones with their carbon intensity")
    z.add_argument("query", nargs="?", default=None, help="part of a zone key or name")
    z.add_argument("--json", action="store_true", help="machine-readable output")
    z.set_defaults(func=cmd_zones)

    c = sub.add_parser("calibrate", help="measure idle power (keep the machine idle)")
    c.add_argument("--seconds", type=float, default=10.0, help="how long to measure (10)")
    c.add_argument("--file", default=None, help="where to save (default ~/.config/meter/idle.json)")
    c.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="sampling interval, seconds" + _from("METER_INTERVAL_S"),
    )
    c.set_defaults(func=cmd_calibrate)

    g = sub.add_parser("dashboard", help="print the Grafana dashboard JSON (Dashboards > Import)")
    g.add_argument("--output", "-o", default=None, metavar="FILE", help="write it to FILE")
    g.set_defaults(func=cmd_dashboard)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc: int = args.func(args)
    except MeterError as exc:
        _err(str(exc))
        return 2
    except FileNotFoundError as exc:
        _err(str(exc))
        return 2
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
