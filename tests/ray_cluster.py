"""A Ray cluster of a test's own on this host (`ray start --head` with its own folder and ports),
stopped without touching any other Ray cluster here: the tests of job submission use it."""

import os


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_ports() -> list[str]:
    """`ray start` flags giving a node ports of its own: two nodes on one host, and a cluster a user
    already runs there, would otherwise meet on the agents' default ports."""
    flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
    return [f"{flag}={free_port()}" for flag in flags]


def stop_cluster(temp_dirs: list[str], gcs_port: int) -> None:
    """Stop the Ray cluster whose nodes started with these --temp-dir folders, and only that one:
    every process whose command line names one of the folders or the GCS port (GCS, raylets, dashboard, monitors, the
    client server) with all its children (agents, workers, engines), children gathered before
    anything is stopped. `ray stop --force` would end every Ray process on the host, a user's own
    cluster included."""
    import re

    import psutil

    gcs = re.compile(rf":{gcs_port}\b")
    owned = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if process.pid != os.getpid() and (any(folder in command for folder in temp_dirs) or gcs.search(command)):
            owned.append(process)
    processes = {}
    for process in owned:
        try:
            for member in [process, *process.children(recursive=True)]:
                processes[member.pid] = member
        except psutil.NoSuchProcess:
            pass
    for process in processes.values():
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(processes.values()), timeout=15)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
