"""One driver per sweep folder: a second one refuses at once; a killed one frees the folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from capgap.errors import CapgapError
from capgap.sweep.lock import LOCK_NAME, driver_lock

HOLD = "from pathlib import Path; from capgap.sweep.lock import driver_lock\n" \
       "import sys, time\nwith driver_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n" \
       "    time.sleep(60)\n"


def test_second_driver_refuses_and_sigkill_releases(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(CapgapError, match=f"being swept by pid {holder.pid}"):
        with driver_lock(tmp_path):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.time()
    with driver_lock(tmp_path):  # the kernel dropped the dead driver's lock
        assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
    assert time.time() - t0 < 5
