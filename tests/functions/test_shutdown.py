"""A function process, as deployed (the functions-framework CLI), ends cleanly on SIGTERM as Knative sends it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from outpost.settings import Settings
from tests.conftest import SCRAPER, function_process

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("function, target", [("poll", "poll_service"), ("start", "start_service")])
async def test_sigterm_ends_a_function_cleanly(settings: Settings, tmp_path: Path, function: str, target: str) -> None:
    log = tmp_path / "function.log"
    with log.open("wb") as stderr:
        async with function_process(function, target, settings, stderr=stderr) as (process, client):
            assert (await client.get("/ping" if function == "poll" else "/metrics", headers=SCRAPER)).status_code == 200
            workers = psutil.Process(process.pid).children(recursive=True)
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{target} did not exit within 30 s of SIGTERM") from None
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert "Traceback" not in text, text
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], text
