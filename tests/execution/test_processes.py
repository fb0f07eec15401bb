"""Lane processes: tasks in order, errors that keep their hint, deaths that say so in one
line, nothing left running, and no import of the caller's ``__main__``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rasterlearn.errors import ParameterError, RasterLearnError
from rasterlearn.execution.processes import ProcessLanes, RemoteTraceback
from rasterlearn.export.settings import choice

SRC = Path(__file__).parents[2] / "src"


def _square(x: int) -> int:
    return x * x


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane processes can import this module (for ``_square``)."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    monkeypatch.setenv("RASTERLEARN_TEST_LANES", "set before the start")


def test_tasks_run_in_order_each_lane_in_its_own_process(importable: None) -> None:
    with ProcessLanes(2, "the job") as lanes:
        assert [f.result(timeout=60) for f in lanes.ready] == [True, True]
        pids = [lanes.submit(k, os.getpid).result() for k in range(2)]
        futures = [lanes.submit(k % 2, _square, k) for k in range(10)]
        assert [f.result() for f in futures] == [k * k for k in range(10)]
        env = lanes.submit(1, os.getenv, "RASTERLEARN_TEST_LANES").result()
    assert env == "set before the start"
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert all(lane.proc.returncode == 0 for lane in lanes.lanes)


def test_errors_come_back_with_their_hint_or_their_traceback(importable: None) -> None:
    with ProcessLanes(1, None) as lanes:
        with pytest.raises(ParameterError) as user:
            lanes.submit(0, choice, "teal", ("RED", "BLUE"), "colour").result()
        assert (user.value.message, user.value.hint) == (
            "unknown colour 'teal'",
            "use one of RED, BLUE",
        )
        with pytest.raises(ValueError, match="invalid literal") as bug:
            lanes.submit(0, int, "x").result()
        assert isinstance(bug.value.__cause__, RemoteTraceback)
        assert "Traceback" in str(bug.value.__cause__)
        assert lanes.submit(0, _square, 3).result() == 9  # the process goes on


def test_a_process_that_dies_fails_its_tasks_in_one_line() -> None:
    with ProcessLanes(1, None) as lanes:
        with pytest.raises(RasterLearnError) as err:
            lanes.submit(0, os._exit, 3).result(timeout=60)
        assert "stopped unexpectedly (exit code 3)" in str(err.value)
        assert "\n" not in str(err.value) and err.value.hint
        with pytest.raises(RasterLearnError, match="exit code 3"):
            lanes.submit(0, os.getpid).result(timeout=60)  # later tasks fail too, no hang


def test_an_error_in_the_with_block_kills_the_processes() -> None:
    start = time.monotonic()
    with pytest.raises(KeyError), ProcessLanes(1, None) as lanes:
        lanes.ready[0].result(timeout=60)
        lanes.submit(0, time.sleep, 60)
        raise KeyError("stop")
    assert lanes.lanes[0].proc.returncode is not None  # ended when the block was left
    assert time.monotonic() - start < 30


def test_the_callers_main_module_is_not_imported(tmp_path: Path) -> None:
    """A script without a ``__main__`` guard runs its lanes once (multiprocessing's spawn
    and forkserver would run the script again in each process)."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os\n"
        "from rasterlearn.execution.processes import ProcessLanes\n"
        "print('script ran')\n"
        "with ProcessLanes(2, None) as lanes:\n"
        "    print(len({lanes.submit(k, os.getpid).result() for k in range(2)}), 'lanes')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "script ran\n2 lanes\n"
    assert done.stderr == ""
