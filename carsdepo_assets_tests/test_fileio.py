"""Crash-safe writes: readable by the group, and no temporary left behind by a killed writer."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from carsdepo_assets.fileio import atomic_write_bytes, remove_orphaned_temporaries

WRITER = """
import sys, time
from pathlib import Path
from carsdepo_assets.fileio import atomic_writer
with atomic_writer(Path(sys.argv[1])) as handle:
    handle.write(b"half")
    handle.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_written_files_are_readable_by_the_group(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) & stat.S_IRGRP


def _start_writer(target: Path) -> subprocess.Popen:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert writer.stdout.readline().strip() == "writing"
    return writer


def test_the_temporary_of_a_writer_killed_mid_write_is_removed_a_live_ones_kept(
    tmp_path: Path,
) -> None:
    killed, live = _start_writer(tmp_path / "killed.bin"), _start_writer(tmp_path / "live.bin")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        temporaries = sorted(p.name for p in tmp_path.iterdir())
        assert len(temporaries) == 2 and all(name.endswith(".tmp") for name in temporaries)
        removed = remove_orphaned_temporaries([tmp_path])
        assert [p.name for p in removed] == [n for n in temporaries if "killed" in n]
        assert [p.name for p in tmp_path.iterdir()] == [n for n in temporaries if "live" in n]
    finally:
        live.kill()
        live.wait(timeout=30)
    assert not (tmp_path / "killed.bin").exists()
