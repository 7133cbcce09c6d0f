"""Outputs never replace what they point at: a regular file (or a new path) is written
atomically, a symlink is followed, a device, a pipe or ``-`` is written through, a directory
is refused (issue 31). Every output option goes through ``atomic_write``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cormorant.data.files import atomic_write
from cormorant.errors import CormorantError
from tests.cli_support import assert_one_error_line, run_cli
from tests.conftest import write_beir


def test_a_regular_file_is_replaced_whole_and_a_crash_keeps_the_old(tmp_path) -> None:
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
    with atomic_write(path) as handle:
        handle.write("new")
    assert path.read_text() == "new"


def test_a_symlink_is_followed_and_kept(tmp_path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with atomic_write(link) as handle:
        handle.write("new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_pipe_is_written_through(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    with atomic_write(fifo) as handle:
        handle.write("through the pipe")
    reader.join(10)
    assert got == ["through the pipe"] and not fifo.is_file()


def test_dash_is_standard_output(capsys) -> None:
    with atomic_write("-") as handle:
        handle.write("to stdout")
    assert capsys.readouterr().out == "to stdout"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_device_is_one_error_and_stays_a_device() -> None:
    with pytest.raises(CormorantError, match="cannot write /dev/full: No space left"), \
            atomic_write("/dev/full") as handle:
        handle.write("x" * 100_000)
    assert not Path("/dev/full").is_file()


def test_a_directory_or_a_path_under_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "file").write_text("keep")
    with pytest.raises(CormorantError, match="is a directory"), atomic_write(tmp_path):
        pass
    with pytest.raises(CormorantError, match="file is not a directory"), \
            atomic_write(tmp_path / "file" / "x.json"):
        pass
    assert (tmp_path / "file").read_text() == "keep"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir(tmp_path_factory.mktemp("outputs") / "tiny")


OUTPUTS = ["--json", "--markdown", "--save-run"]


@pytest.mark.parametrize("option", OUTPUTS)
def test_eval_writes_through_dev_stdout_in_a_real_process(dataset, option) -> None:
    # The observed failure ran as root: the rename replaced /dev/stdout with a regular file.
    # Here stdout is a pipe, so the JSON must arrive through it, and /dev/stdout stay a device.
    done = subprocess.run([sys.executable, "-m", "cormorant.cli", "eval", "-d", str(dataset),
                           "--no-cache", option, "/dev/stdout"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    expected = {"--json": '"metrics"', "--markdown": "| dataset |", "--save-run": " Q0 d1 1 "}
    assert done.stdout.count(expected[option]) >= 1
    assert os.path.islink("/dev/stdout")  # not replaced by a regular file


@pytest.mark.parametrize("option", [*OUTPUTS, "--report"])
def test_every_output_option_follows_symlinks_and_refuses_directories(dataset, tmp_path,
                                                                      option) -> None:
    suffix = ".md" if option == "--report" else ".out"
    target = tmp_path / f"target{suffix}"
    target.write_text("old")
    link = tmp_path / f"link{suffix}"
    link.symlink_to(target)
    overwrite = ["--overwrite"] if option == "--save-run" else []  # it never replaces unasked
    result = run_cli("eval", "-d", dataset, "--no-cache", option, link, *overwrite)
    assert result.code == 0, result.err + str(result.traceback)
    assert link.is_symlink() and target.read_text() != "old"
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    assert_one_error_line(run_cli("eval", "-d", dataset, "--no-cache", option, folder),
                          "is a directory")
    under = target / f"x{suffix}"
    assert_one_error_line(run_cli("eval", "-d", dataset, "--no-cache", option, under),
                          "is not a directory")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_eval_json_to_a_full_disk_is_one_line(dataset) -> None:
    result = run_cli("eval", "-d", dataset, "--no-cache", "--json", "/dev/full")
    assert_one_error_line(result, "No space left on device")
    assert Path("/dev/full").is_char_device()


def test_a_full_disk_during_index_build_is_one_line(dataset, tmp_path, monkeypatch) -> None:
    import errno

    from cormorant.index import docstore

    def full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(docstore.DocStore, "create", staticmethod(full))
    result = run_cli("index", "build", "-d", dataset, "-o", tmp_path / "idx")
    assert_one_error_line(result, "No space left on device")
    assert not (tmp_path / "idx").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the temporary directory went too


@pytest.mark.skipif(not os.path.isfile("/proc/version"), reason="needs /proc")
def test_a_folder_that_refuses_new_files_is_one_error() -> None:
    # Found by the fuzz test: /proc/version is a regular file whose folder takes no temporary.
    with pytest.raises(CormorantError, match="cannot write /proc/version"), \
            atomic_write("/proc/version") as handle:
        handle.write("x")
