"""A checkout works wherever it is: the bundled guest builds to the same bytes from any path and
any cache, gdb finds the sources of the checkout in use, and a trace recorded in one checkout
replays, verified, in another with another cache (the trace carries its kernel)."""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dbgvm.guest import build as guest_build
from gdb_harness import free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent


def checkout(where: Path) -> Path:
    """A copy of this checkout's package at another path (what a clone elsewhere has)."""
    shutil.copytree(ROOT / "dbgvm", where / "dbgvm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return where


def dbgvm_in(tree: Path, cache: Path, *args: str, stdin: bytes = b"",
             popen: bool = False):
    """`python -m dbgvm ARGS` run from the checkout `tree` with the cache `cache`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "XDG_CACHE_HOME": str(cache)}
    argv = [sys.executable, "-m", "dbgvm", *args]
    if popen:
        return subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, cwd=tree, env=env, input=stdin, capture_output=True,
                          timeout=300)


def test_the_bundled_guest_is_the_same_bytes_from_any_path_and_cache(tmp_path, monkeypatch):
    digests = []
    for name in ("one", "another/much/deeper/path"):
        src = tmp_path / name / "src"
        shutil.copytree(guest_build.SOURCE_DIR, src)
        monkeypatch.setattr(guest_build, "SOURCE_DIR", src)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name / "cache"))
        kernel = guest_build.bundled_kernel()
        assert kernel.is_relative_to(tmp_path / name / "cache")        # built afresh here
        data = kernel.read_bytes()
        assert str(tmp_path).encode() not in data                      # no path of a checkout
        assert guest_build.SOURCE_PREFIX.encode() in data              # a fixed name instead
        digests.append(hashlib.sha256(data).hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_given_the_printed_command_lists_the_sources_of_the_checkout_in_use(tmp_path):
    tree = checkout(tmp_path / "elsewhere")
    shell = tree / "dbgvm" / "guest" / "src" / "shell.c"
    lines = shell.read_text().splitlines(keepends=True)
    marker = "/* this line is in the checkout at elsewhere */"
    shell.write_text(marker + lines[0][len(lines[0].rstrip("\n")):] + "".join(lines[1:]))
    cache = tmp_path / "cache"
    path = dbgvm_in(tree, cache, "guest-path")
    assert path.returncode == 0, path.stderr
    kernel = path.stdout.decode().strip()
    assert Path(kernel).is_file() and Path(kernel).is_relative_to(cache)
    port = free_port()
    stub = dbgvm_in(tree, cache, "run", "--gdb", f"127.0.0.1:{port}", "-S", "--batch",
                    popen=True)
    try:
        wait_listening(port, stub)
        assert stub.stderr.readline().startswith("dbgvm: waiting for gdb on ")
        said = stub.stderr.readline()
        assert said.startswith("dbgvm: attach with: gdb ")
        command = said.removeprefix("dbgvm: attach with: ").strip()
        assert command == shlex.join([
            "gdb", "-ex",
            f"set substitute-path /dbgvm-guest-src {tree / 'dbgvm' / 'guest' / 'src'}",
            "-ex", f"target remote 127.0.0.1:{port}"]), said      # no file: the stub serves it
        assert stub.stderr.readline() == f"dbgvm: gdb gets its symbols from the stub: {kernel}\n"
        gdb = subprocess.run([*shlex.split(command), "-nx", "-batch", "-ex",
                              "list shell.c:1,1", "-ex", "info source", "-ex", "kill"],
                             capture_output=True, text=True, timeout=60)
        assert f"1\t{marker}" in gdb.stdout, gdb.stdout + gdb.stderr
        assert f"Located in {shell}" in gdb.stdout
    finally:
        stub.kill()
        stub.wait()


def test_a_trace_recorded_in_one_checkout_replays_verified_in_another(tmp_path):
    one, other = checkout(tmp_path / "one"), checkout(tmp_path / "other")
    trace = tmp_path / "run.trace"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    proc = dbgvm_in(one, tmp_path / "cache-one", "run", "--batch", "--disk", str(disk),
                    "--record", str(trace),
                    stdin=b"echo hi\ndisk write 1 portable\nls\npoweroff\n")
    assert proc.returncode == 0, proc.stderr
    assert b"hi\n" in proc.stdout
    shutil.rmtree(one)                       # the recording checkout and its cache are gone
    shutil.rmtree(tmp_path / "cache-one")
    disk.unlink()
    proc = dbgvm_in(other, tmp_path / "cache-other", "replay", str(trace), "--batch")
    assert proc.returncode == 0, proc.stderr
    assert b"replay identical to the recording" in proc.stderr
    assert not (tmp_path / "cache-other" / "dbgvm" / "guest").exists()   # nothing was built


def test_a_replay_served_to_gdb_prints_the_command_with_the_traces_kernel(tmp_path):
    trace = tmp_path / "run.trace"
    proc = dbgvm_in(ROOT, tmp_path / "cache-one", "run", "--batch", "--record", str(trace),
                    stdin=b"poweroff\n")
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    stub = dbgvm_in(ROOT, tmp_path / "cache-two", "replay", str(trace), "--gdb",
                    f"127.0.0.1:{port}", popen=True)
    try:
        wait_listening(port, stub)
        assert stub.stderr.readline().startswith("dbgvm: replaying ")
        argv = shlex.split(stub.stderr.readline().removeprefix("dbgvm: attach with: "))
        served = stub.stderr.readline()
    finally:
        stub.kill()
        stub.wait()
    from dbgvm.record.trace import read
    # the trace's kernel, written to this cache, is what the stub serves to gdb
    kernel = Path(served.removeprefix("dbgvm: gdb gets its symbols from the stub: ").strip())
    assert kernel.is_relative_to(tmp_path / "cache-two")
    assert hashlib.sha256(kernel.read_bytes()).hexdigest() == \
        read(trace).header["kernel"]["sha256"]
    assert argv == ["gdb", "-ex", guest_build.gdb_source_map(), "-ex",
                    f"target remote 127.0.0.1:{port}"]
