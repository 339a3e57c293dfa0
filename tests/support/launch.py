"""Multi-process test launches: `accelerate launch` as a user types it, on a port the OS says is free.

A fixed port (29533 and the like) collides when two test suites run on one machine; every launch in
tests/ and bench/ takes its port from `free_port` instead, at the moment it starts.
"""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    """A TCP port nothing listens on now: the OS picks it when a socket binds port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(num_processes: int = 2) -> list[str]:
    """The command prefix of `accelerate launch --multi_gpu --num_processes N` on one machine and a fresh free
    port; without GPUs the processes run on the CPU over gloo."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]
