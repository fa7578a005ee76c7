"""The studio started exactly as the README says sits idle at almost no CPU.

The README's first command makes ``.venv`` inside the repository. Streamlit's default file
watcher followed every folder under the app's, that venv included: with thousands of folders
it looped on "Inotify queue overflowed" and kept a core busy while nobody used the app. The
studio's own ``.streamlit/config.toml`` must prevent that, with no flag on the command line.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_FOLDERS = 8000  # a venv of the README's packages holds about 7,600 folders
SKIPPED = (".git", ".venv", "runs", "data", "test-artifacts", ".pytest_cache", ".ruff_cache")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_clone(folder: Path) -> Path:
    """The repository's files in ``folder`` with a venv-sized ``.venv`` beside them, and its
    config's port moved to a free one: the one change, because 8501 may be taken on a shared
    machine (the port has nothing to do with watching)."""
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(*SKIPPED, "__pycache__"))
    packages = folder / ".venv" / "lib" / "python3" / "site-packages"
    for i in range(VENV_FOLDERS):
        module = packages / f"package{i // 100}" / f"module{i}"
        module.mkdir(parents=True)
        (module / "__init__.py").write_text("")
    config = folder / ".streamlit" / "config.toml"
    text, count = re.subn(r"(?m)^port = \d+$", f"port = {free_port()}", config.read_text())
    assert count == 1, f"{config}: no port line to move"
    config.write_text(text)
    return folder


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(url: str, pid: int, settle: float = 8.0, seconds: float = 10.0) -> float:
    """Share of a core the server uses over ``seconds`` while one session (what an open tab
    holds, and what starts Streamlit's watcher) stays connected and nobody does anything."""
    import websockets

    address = url.replace("http://", "ws://") + "/_stcore/stream"
    async with websockets.connect(address, subprotocols=["streamlit"]):
        await asyncio.sleep(settle)
        before = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        return (cpu_seconds(pid) - before) / seconds


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads CPU time from /proc")
def test_the_app_started_as_the_readme_says_is_idle_beside_a_large_venv(tmp_path):
    clone = fresh_clone(tmp_path / "celebmodel")
    port = re.search(r"(?m)^port = (\d+)$", (clone / ".streamlit/config.toml").read_text())[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(clone),
        "CELEBMODEL_RUNS": str(tmp_path / "runs"),
        "CELEBMODEL_DATA": str(tmp_path / "data"),
    }
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py"],  # no flags
            cwd=clone,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                assert time.monotonic() < deadline, f"no answer on {url}: {log.read_text()}"
                time.sleep(0.5)
        share = asyncio.run(idle_cpu(url, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert share <= 0.02, f"idle server used {share:.0%} of a core\n{log.read_text()[-2000:]}"
    assert "Inotify queue overflowed" not in log.read_text()
