"""`supermin.run()` and `supermin --run`: from package names to a
command's output in a real qemu, with the appliance cached; the command
and input files travel in an archive appended to the initrd, output files
come back on a disk of their own, a host directory is shared over 9p."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import supermin

from conftest import BOOT_TIMEOUT, SMALL


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own (the KVM verdict of the machine's cache
    is not there: use TCG, or pay the probe)."""
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "supermin"


def test_cold_then_warm_with_a_long_command_and_a_large_input(cache, tmp_path):
    """The first run builds into the cache, the second reuses it (said by
    the result, not guessed from timings); a 6,000-byte command and a 5 MB
    input file get in; /tmp keeps its mode."""
    data = os.urandom(5 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    long_word = "y" * 6000
    command = f"echo {long_word} | wc -c; sha256sum /tmp/in/big.bin; stat -c %a /tmp; exit 7"
    cold = supermin.run(SMALL, command, files={"/tmp/in/big.bin": tmp_path / "big.bin"}, accel="tcg",
                        timeout=BOOT_TIMEOUT)
    assert not cold.cached and cold.returncode == 7 and cold.rebuilt_because == ("output missing",)
    assert cold.stdout.split() == ["6001", hashlib.sha256(data).hexdigest(), "/tmp/in/big.bin", "1777"], cold.stdout
    assert cold.appliance.format == "initramfs" and cache in cold.appliance.output.parents
    warm = supermin.run(SMALL, "echo warm", accel="tcg", timeout=BOOT_TIMEOUT)
    assert warm.cached and warm.stdout == "warm\n" and warm.returncode == 0 and warm.rebuilt_because == ()
    assert warm.appliance.output == cold.appliance.output
    assert warm.duration > 0


def test_failures_are_results_unless_checked_and_timeouts_raise(cache):
    r = supermin.run(SMALL, "echo out; echo err >&2; false", accel="tcg", timeout=BOOT_TIMEOUT)
    assert r.returncode == 1 and "out" in r.stdout and "err" in r.stdout
    with pytest.raises(supermin.BootError) as e:
        supermin.run(SMALL, "exit 3", check=True, accel="tcg", timeout=BOOT_TIMEOUT)
    assert e.value.returncode == 3
    with pytest.raises(supermin.BootError, match="did not finish within 20"):
        supermin.run(SMALL, "sleep 1000", accel="tcg", timeout=20)


def test_ext2_runs_too_and_inputs_land_in_its_root(cache, tmp_path):
    (tmp_path / "note").write_text("hello\n")
    os.chmod(tmp_path / "note", 0o640)
    r = supermin.run(SMALL, "cat /srv/note; stat -c %a /srv/note; test -b /dev/vda && echo disk", format="ext2",
                     files={"srv/note": tmp_path / "note"}, accel="tcg", timeout=BOOT_TIMEOUT)
    assert r.stdout.split() == ["hello", "640", "disk"], r.stdout
    with pytest.raises(supermin.SuperminError, match="run\\(\\) boots initramfs or ext2"):
        supermin.run(SMALL, "true", format="tar")
    with pytest.raises(supermin.SuperminError, match="not a path for a file in the appliance"):
        supermin.run(SMALL, "true", files={"../etc/x": tmp_path / "note"}, accel="tcg")


def test_inputs_follow_the_appliances_own_symlinks(cache, tmp_path):
    """/var/run is an absolute symlink to /run in Debian's base-files: an
    input under it lands in the appliance's /run, not outside it."""
    (tmp_path / "pid").write_text("42\n")
    r = supermin.run(SMALL, "readlink /var/run; cat /run/x.pid", files={"/var/run/x.pid": tmp_path / "pid"},
                     accel="tcg", timeout=BOOT_TIMEOUT)
    assert r.stdout.split() == ["/run", "42"], r.stdout


def test_an_edited_appliance_is_rebuilt(cache, prepared, tmp_path):
    import shutil

    app = tmp_path / "sd"
    shutil.copytree(prepared, app)
    (app / "hostfiles").write_text("/etc/hostname\n")
    first = supermin.run([app], "cat /etc/hostname", accel="tcg", timeout=BOOT_TIMEOUT)
    assert not first.cached and first.stdout.strip() == Path("/etc/hostname").read_text().strip()
    assert supermin.run([app], "true", accel="tcg", timeout=BOOT_TIMEOUT).cached
    (app / "hostfiles").write_text("/etc/hostname\n/etc/issue\n")
    again = supermin.run([app], "test -f /etc/issue && echo issue", accel="tcg", timeout=BOOT_TIMEOUT)
    assert not again.cached and again.stdout == "issue\n"


def test_a_cache_others_can_change_is_not_used(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # writable by all, not sticky
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    a = supermin.run(SMALL, "echo a", accel="tcg", timeout=BOOT_TIMEOUT)
    b = supermin.run(SMALL, "echo b", accel="tcg", timeout=BOOT_TIMEOUT)
    assert (a.stdout, b.stdout) == ("a\n", "b\n") and not a.cached and not b.cached
    assert a.appliance is None, "built in a scratch directory, gone"
    assert not (shared / "supermin" / "appliances").exists()


def test_the_command_line_prints_the_output_and_exits_with_the_status(cache):
    r = subprocess.run([sys.executable, "-m", "supermin", "--run", "echo via-cli; exit 5", *SMALL],
                       capture_output=True, text=True, timeout=BOOT_TIMEOUT + 60)
    assert r.returncode == 5 and r.stdout == "via-cli\n", r.stdout + r.stderr
    (home,) = [p for p in (cache / "appliances").iterdir() if p.is_dir()]
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for extra in (["--size", "1G"], ["--root", "/srv"], ["--if-newer"]):
        r = subprocess.run([sys.executable, "-m", "supermin", "--run", "true", *extra, *SMALL],
                           capture_output=True, text=True)
        assert r.returncode == 1 and "--run does not take " + extra[0] in r.stderr, r.stderr


def test_output_files_come_back_and_a_shared_directory_is_read_and_written(cache, tmp_path):
    """A 6 MB file made in the guest's /out arrives intact, without its
    set-uid bit; a symlink inside comes back, one leading out does not; a
    host directory is mounted over 9p, read and written, and what the
    guest makes there is a plain 0600 file (ext2, whose root stays
    /dev/vda with two more virtio devices).  The next run replaces the
    outputs whole; a directory of the user's is refused before booting."""
    out, share = tmp_path / "out", tmp_path / "share"
    share.mkdir()
    (share / "from-host").write_text("hello from the host\n")
    command = ("head -c 6M /dev/urandom > /out/blob; sha256sum /out/blob | cut -c1-64 > /out/blob.sum; "
               "chmod 4755 /out/blob; mkdir /out/sub; ln -s /etc/passwd /out/sub/pw; ln -s ../blob /out/sub/b; "
               "cat /srv/in/from-host; echo from-guest > /srv/in/reply; chmod 4777 /srv/in/reply")
    with pytest.warns(supermin.SuperminWarning, match="sub/pw -> /etc/passwd leads out of the outputs"):
        r = supermin.run(SMALL, command, outputs=out, share=(share, "/srv/in"), format="ext2", accel="tcg",
                         timeout=BOOT_TIMEOUT)
    assert r.returncode == 0 and r.stdout == "hello from the host\n", r.stdout
    assert set(r.output_files) == {"blob", "blob.sum", "sub", "sub/b"}
    blob = (out / "blob").read_bytes()
    assert len(blob) == 6 << 20 and hashlib.sha256(blob).hexdigest() == (out / "blob.sum").read_text().strip()
    assert stat.S_IMODE((out / "blob").stat().st_mode) == 0o755, "no set-uid bit on the host"
    assert os.readlink(out / "sub" / "b") == "../blob" and not os.path.lexists(out / "sub" / "pw")
    assert (share / "reply").read_text() == "from-guest\n"
    assert stat.S_IMODE((share / "reply").stat().st_mode) == 0o600, "no set-uid file made on the host"
    again = supermin.run(SMALL, "echo 2 > /out/only", outputs=out, accel="tcg", timeout=BOOT_TIMEOUT)
    assert again.output_files == ("only",) and sorted(os.listdir(out)) == [".supermin-outputs", "only"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes").write_text("keep")
    with pytest.raises(supermin.OutputError, match="did not write"):
        supermin.run(SMALL, "true", outputs=mine, accel="tcg", timeout=BOOT_TIMEOUT)
    assert (mine / "notes").read_text() == "keep"


def test_the_command_line_sends_outputs_to_o_and_shares(cache, tmp_path):
    """`--run ... -o DIR` (initramfs: the drivers come with the run, the
    cached appliance has none) and `--share DIR` at /share; a command that
    removes /out is an error with the console, not silence."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "n").write_text("7\n")
    r = subprocess.run([sys.executable, "-m", "supermin", "--run", "cp /share/n /out/n; echo $(( $(cat /out/n) * 6 ))",
                        "-o", str(tmp_path / "o"), "--share", str(tmp_path / "s"), *SMALL],
                       capture_output=True, text=True, timeout=BOOT_TIMEOUT + 60)
    assert r.returncode == 0 and r.stdout == "42\n", r.stdout + r.stderr
    assert (tmp_path / "o" / "n").read_text() == "7\n"
    with pytest.raises(supermin.BootError, match="sent no output files") as e:
        supermin.run(SMALL, "rm -r /out", outputs=tmp_path / "o2", accel="tcg", timeout=BOOT_TIMEOUT)
    assert "supermin: sending /out" in e.value.console
    r = subprocess.run([sys.executable, "-m", "supermin", "--build", "-f", "chroot", "--share", "x", "-o", "y", "z"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "--share goes with --run" in r.stderr
