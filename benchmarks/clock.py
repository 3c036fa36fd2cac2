"""The benchmarks' clock (wall time, or the CPU time this process used) and machine description.

`--clock cpu` (with `--threads 1`) times with `time.process_time`, which does not advance while other
processes hold the cores, so a shared, loaded machine slows both models' numbers far less than wall
time does (it still shares caches and memory bandwidth). With several threads it would also count
OpenMP threads spinning at barriers, so the scripts refuse that combination. CUDA runs use wall time
with synchronisation.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def add_clock_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, i.e. every core)")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="wall time, or this process's CPU time (needs --threads 1; for loaded machines)")


def apply_clock_arguments(args: argparse.Namespace, device: torch.device) -> Callable[[], float]:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise SystemExit("--clock cpu needs --device cpu and --threads 1 (CPU time of several threads counts spinning)")
    return CLOCKS[args.clock]


def clock_note(args: argparse.Namespace) -> str:
    return "CPU time of the process (--clock cpu)" if args.clock == "cpu" else "wall time"


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"CPU x{torch.get_num_threads()} threads ({os.cpu_count()} cores{load})"
