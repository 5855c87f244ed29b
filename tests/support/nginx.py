"""Debian's nginx in front of a vault, configured from the shipped deploy/nginx/medvault.conf.

The shipped file is used as it is, with only what a test must change: the upstream
port, a plain-HTTP listener on a free port instead of the TLS lines (marked ``# tls``),
log and temp paths inside the test's folder, and optionally shorter timeouts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.services import free_port, unavailable

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "medvault.conf"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def nginx_binary() -> str:
    """Debian's nginx; skipped locally, a failure in CI when it is missing."""
    found = shutil.which("nginx") or next(
        (path for path in NGINX_CANDIDATES if Path(path).exists()), None
    )
    if found is None:
        unavailable("nginx is not installed (apt-get install nginx)")
        raise AssertionError("unreachable")
    return found


def site_config(
    *,
    upstream_ports: Sequence[int],
    listen_port: int,
    folder: Path,
    overrides: Mapping[str, str],
    server_extra: str = "",
    server_parameters: str = "",
) -> str:
    """The shipped site config, adapted to a test: see the module docstring.

    Several ``upstream_ports`` make the upstream block a round-robin over them (nginx's
    default balancing), as in front of several instances; ``server_extra`` adds
    directives to the server block (a test's diagnostic header, say), and
    ``server_parameters`` to each upstream server line (``fail_timeout=2s``).
    """
    text = SHIPPED_CONFIG.read_text()
    text = "\n".join(line for line in text.splitlines() if not line.rstrip().endswith("# tls"))
    servers = "\n    ".join(
        f"server 127.0.0.1:{port} {server_parameters};".replace(" ;", ";")
        for port in upstream_ports
    )
    text = text.replace("server 127.0.0.1:8000;", servers)
    text = text.replace(
        "server_name vault.example.org;",
        f"listen 127.0.0.1:{listen_port};\n    server_name vault.example.org;\n    {server_extra}",
    )
    text = text.replace("/var/log/nginx/medvault.access.log", str(folder / "access.log"))
    for directive, value in overrides.items():
        text, count = re.subn(rf"(?m)^(\s*{directive}) [^;]+;", rf"\1 {value};", text)
        assert count, f"{directive} is not in the shipped config"
    return text


def main_config(folder: Path, site: str) -> str:
    temp = {
        name: folder / name
        for name in ("client_body_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp")
    }
    for path in temp.values():
        path.mkdir(exist_ok=True)
    # Workers of a root master would switch to `nobody`, who cannot read a private tmp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\n"
        # Room for a load test's clients plus a connection upstream for each.
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"  client_body_temp_path {temp['client_body_temp']};\n"
        f"  proxy_temp_path {temp['proxy_temp']};\n"
        f"  fastcgi_temp_path {temp['fastcgi_temp']};\n"
        f"  uwsgi_temp_path {temp['uwsgi_temp']};\n"
        f"  scgi_temp_path {temp['scgi_temp']};\n"
        "  default_type application/octet-stream;\n"
        f"{site}\n"
        "}\n"
    )


class NginxProxy:
    """nginx as a non-daemon child process on a free 127.0.0.1 port."""

    def __init__(
        self,
        folder: Path,
        *,
        upstream_port: int | None = None,
        upstream_ports: Sequence[int] = (),
        overrides: Mapping[str, str] | None = None,
        server_extra: str = "",
        server_parameters: str = "",
    ) -> None:
        self.binary = nginx_binary()
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        ports = [*([upstream_port] if upstream_port is not None else []), *upstream_ports]
        assert ports, "nginx needs at least one upstream"
        site = site_config(
            upstream_ports=ports,
            listen_port=self.port,
            folder=folder,
            overrides=overrides or {},
            server_extra=server_extra,
            server_parameters=server_parameters,
        )
        self.config_path = folder / "nginx.conf"
        self.config_path.write_text(main_config(folder, site))
        self._proc: subprocess.Popen[bytes] | None = None

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.folder / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> NginxProxy:
        args = [self.binary, "-e", str(self.folder / "error.log"), "-p", str(self.folder)]
        checked = subprocess.run(
            [*args, "-t", "-c", str(self.config_path)], capture_output=True, check=False
        )
        assert checked.returncode == 0, checked.stderr.decode(errors="replace")
        self._proc = subprocess.Popen(
            [*args, "-c", str(self.config_path), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{self.error_log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start:\n{self.error_log()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGQUIT)  # its own session: master and worker only
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
