"""build -f chroot end to end: real host files, Debian's supermin as the
reference, every kind of appliance input, output safety."""

from __future__ import annotations

import fcntl
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import sys
import time
from pathlib import Path

import pytest

import supermin
from conftest import SMALL, run_as_nobody, run_cli, run_upstream, tree


def make_tar(path: Path, files: dict, compress: str = "gz") -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith("init") else 0o644
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    path.write_bytes(gzip.compress(raw) if compress == "gz" else lzma.compress(raw) if compress == "xz" else raw)
    return path


def test_chroot_runs_bash(built):
    out = subprocess.run(["chroot", str(built), "/bin/bash", "-c", "echo hi; ls /etc/bash.bashrc"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "hi\n/etc/bash.bashrc\n"


def test_file_set_matches_upstream(prepared, built, upstream, tmp_path):
    run_upstream("--build", "-f", "chroot", str(prepared), "-o", str(tmp_path / "up"))
    ours, theirs = tree(built), tree(tmp_path / "up")
    # Difference 1 (asked for): Provides are honoured, so mawk, which
    # provides base-files' Pre-Depends 'awk', is in; upstream drops it.
    mawk = {p for p in ours if "mawk" in p}
    assert mawk and not any("mawk" in p for p in theirs)
    # Difference 3 (asked for): the alternatives links of the packages in
    # the appliance (/usr/bin/awk -> /etc/alternatives/awk -> mawk), which
    # no package lists; upstream has none.
    links = {p for p in ours if p.startswith("/etc/alternatives") or ours[p][0] == "l"
             and "etc/alternatives/" in os.readlink(built / p.lstrip("/"))}
    assert "/usr/bin/awk" in links and "/etc/alternatives/awk" in links
    assert not links & set(theirs) - {"/etc/alternatives"}
    assert set(ours) - mawk - links == set(theirs) - {"/etc/alternatives"}
    # Same types and modes for every common path.
    diffs = {p: (ours[p], theirs[p]) for p in theirs if ours[p] != theirs[p]}
    assert diffs == {}
    # Difference 2 (asked for): absolute symlinks are rewritten relative
    # without upstream's '..//', and resolve to the same place.
    for p in theirs:
        if theirs[p][0] == "l":
            ours_t = os.readlink(built / p.lstrip("/"))
            assert "//" not in ours_t and not ours_t.startswith("/")
            a = os.path.realpath(built / p.lstrip("/")).replace(str(built), "")
            b = os.path.realpath(tmp_path / "up" / p.lstrip("/")).replace(str(tmp_path / "up"), "")
            assert a == b, p


def test_owners_times_and_hard_links_are_kept(built, prepared, tmp_path):
    host = Path("/usr/bin/bash")
    copy = built / "usr/bin/bash"
    assert copy.stat().st_mtime == host.stat().st_mtime
    assert (copy.stat().st_uid, copy.stat().st_mode) == (host.stat().st_uid, host.stat().st_mode)
    assert (built / "etc/bash.bashrc").stat().st_uid == 0
    # Two names of one host file are two names of one file in the output.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a").write_text("one inode\n")
    os.link(linked / "a", linked / "b")
    sd = tmp_path / "sd"
    shutil.copytree(prepared, sd)
    (sd / "hostfiles").write_text(f"{linked}/a\n{linked}/b\n")
    out = tmp_path / "app"
    r = supermin.build([sd], out)
    a, b = (out / str(linked / name).lstrip("/") for name in "ab")
    assert a.stat().st_ino == b.stat().st_ino and a.stat().st_nlink == 2
    assert a.read_text() == "one inode\n" and r.hard_links >= 1


def test_hostfiles_excludes_and_layered_tarballs(tmp_path):
    sd = tmp_path / "sd"
    supermin.prepare(SMALL, sd)
    (sd / "hostfiles").write_text("/etc/host*.conf\n/etc/nonexistent-*\n/etc/os-release\n")
    (sd / "excludefiles").write_text("-/usr/share/doc/*\n-/usr/share/man/*\n")
    make_tar(sd / "init.tar.gz", {"init": b"#!/bin/sh\necho base\n", "etc/motd": b"one\n"})
    make_tar(sd / "zz-override.tar.xz", {"etc/motd": b"two\n"}, "xz")
    (sd / "packages-extra").write_bytes(gzip.compress(b"sed\n"))  # gz-wrapped packages list
    app = supermin.Appliance.load(sd)
    # Lines of one kind are concatenated in byte-sorted walk order.
    assert app.packages == ["bash", "coreutils", "sed"]
    assert app.excludes == ["/usr/share/doc/*", "/usr/share/man/*"]
    assert [p.name for p in app.base_images] == ["base.tar.gz", "init.tar.gz", "zz-override.tar.xz"]
    paths = {f.path for f in app.files()}
    assert "/usr/bin/sed" in paths or "/bin/sed" in paths
    assert "<table>" in app._repr_html_()
    out = tmp_path / "out"
    result = app.build(out, include_packagelist=True)
    assert result.output == out and result.format == "chroot" and not result.skipped
    assert (out / "init").read_text() == "#!/bin/sh\necho base\n" and os.access(out / "init", os.X_OK)
    assert (out / "etc/motd").read_text() == "two\n", "later tarballs overwrite earlier ones"
    assert (out / "etc/host.conf").exists() and (out / "etc/os-release").exists()
    assert (out / "usr/share/doc").is_dir() and not any((out / "usr/share/doc").iterdir())
    assert not (out / "usr/share/man").exists() or not any((out / "usr/share/man").iterdir())
    packagelist = (out / "packagelist").read_text().splitlines()
    assert packagelist == sorted(packagelist) and any(l.startswith("sed_") for l in packagelist)
    assert oct((out / "packagelist").stat().st_mode & 0o777) == "0o644"


def test_python_build_from_package_names_with_progress(tmp_path):
    seen = []
    result = supermin.build(["bash", "coreutils"], tmp_path / "app", progress=lambda s, d, t: seen.append((s, d, t)))
    assert {p.name for p in result.packages} >= {"bash", "coreutils", "libc6"}
    assert result.files_copied > 500 and "chroot" in repr(result)
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert stages == ["resolving dependencies", "reading file lists", "config files", "listing files",
                      "writing files"], stages
    # Each run of a stage (prepare and build both resolve and read file
    # lists) starts at 0, only grows, and ends at its total.
    runs = []
    for s, d, t in seen:
        if d == 0 or not runs or runs[-1][0] != s:
            runs.append((s, []))
        runs[-1][1].append((d, t))
    for stage, counts in runs:
        assert counts[0][0] == 0 and counts[-1][0] == counts[-1][1], (stage, counts)
        assert [d for d, _ in counts] == sorted(d for d, _ in counts), stage
    subprocess.run(["chroot", str(tmp_path / "app"), "/bin/true"], check=True)


def test_if_newer_skips_and_notices_in_place_edits(prepared, tmp_path):
    sd = tmp_path / "sd"
    shutil.copytree(prepared, sd)
    out = tmp_path / "out"
    run_cli("--build", "-f", "chroot", "--if-newer", str(sd), "-o", str(out))
    marker = out / "marker"
    marker.write_text("from the first build")
    proc = run_cli("--build", "-f", "chroot", "--if-newer", str(sd), "-o", str(out))
    assert "does not need rebuilding" in proc.stderr and marker.exists()
    # Edit a file in place: the directory's own mtime does not change.
    dir_mtime = sd.stat().st_mtime_ns
    time.sleep(0.01)
    with open(sd / "packages", "a") as f:
        f.write("sed\n")
    os.utime(sd, ns=(dir_mtime, dir_mtime))
    run_cli("--build", "-f", "chroot", "--if-newer", str(sd), "-o", str(out))
    assert not marker.exists(), "rebuilt"


def test_lock_blocks_until_released_and_concurrent_builders_agree(prepared, tmp_path):
    lock = tmp_path / "lock"
    out = tmp_path / "out"
    with open(lock, "w") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)  # what upstream supermin takes, too
        proc = subprocess.Popen([sys.executable, "-m", "supermin", "--build", "-f", "chroot", "--lock", str(lock),
                                 str(prepared), "-o", str(out)], stderr=subprocess.PIPE)
        time.sleep(1.5)
        assert proc.poll() is None and not out.exists(), "waits for the lock"
    assert proc.wait(timeout=60) == 0 and (out / "usr/bin/bash").exists()
    shutil.rmtree(out)
    procs = [subprocess.Popen([sys.executable, "-m", "supermin", "--build", "-f", "chroot", "--lock", str(lock),
                               "--if-newer", str(prepared), "-o", str(out)], stderr=subprocess.PIPE) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    skipped = sum(b"does not need rebuilding" in p.stderr.read() for p in procs)
    assert skipped == 3, "one builder built, the others found it fresh"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock", "out"]
    subprocess.run(["chroot", str(out), "/bin/true"], check=True)


def _bad(sd: Path, out: Path) -> str:
    proc = run_cli("--build", "-f", "chroot", str(sd), "-o", str(out), check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("supermin: "), proc.stderr
    return proc.stderr


@pytest.fixture
def good_output(prepared, tmp_path):
    out = tmp_path / "out"
    supermin.build([prepared], out)
    (out / "precious").write_text("keep me")
    return out


def check_intact(out: Path):
    assert (out / "precious").read_text() == "keep me"
    assert not [p for p in out.parent.iterdir() if p.name.startswith("out.")], "no leftovers"


@pytest.mark.parametrize("name,content,message", [
    ("packages", b"bash\nno-such-package-abc\n", "'no-such-package-abc'"),
    ("comment", b"# a comment\nbash\n", "unknown file type"),
    ("excludefiles", b"-/usr/share/doc/*\n/usr/share/man/*\n", "does not start with '-'"),
    ("initrd.cpio", b"070701" + b"0" * 200, "cpio files are not supported"),
])
def test_bad_inputs_are_named_and_keep_previous_output(tmp_path, prepared, good_output, name, content, message):
    sd = tmp_path / "sd"
    shutil.copytree(prepared, sd)
    (sd / name).write_bytes(content)
    err = _bad(sd, good_output)
    assert message in err and (name in err or "no-such" in err)
    check_intact(good_output)


def test_truncated_tarball_is_named(tmp_path, prepared, good_output):
    sd = tmp_path / "sd"
    shutil.copytree(prepared, sd)
    data = (sd / "base.tar.gz").read_bytes()
    (sd / "base.tar.gz").write_bytes(data[: len(data) // 2])
    err = _bad(sd, good_output)
    assert "base.tar.gz" in err
    check_intact(good_output)


def test_nonexistent_input_unwritable_output_and_output_inside_input(tmp_path, prepared, good_output):
    assert "does-not-exist" in _bad(tmp_path / "does-not-exist", good_output)
    check_intact(good_output)
    assert "/proc/out" in _bad(prepared, Path("/proc/out"))
    sd = tmp_path / "sd"
    shutil.copytree(prepared, sd)
    assert "inside the input" in _bad(sd, sd / "out")
    assert not (sd / "out").exists()
    with pytest.raises(supermin.OutputError) as e:
        supermin.build([prepared], "/proc/out")
    assert e.value.path == Path("/proc/out")
    with pytest.raises(supermin.ApplianceError) as e:
        supermin.build([tmp_path / "does-not-exist"], tmp_path / "x")
    assert e.value.path == tmp_path / "does-not-exist"


def test_atomic_swap_replaces_whole_output(prepared, good_output):
    inode = good_output.stat().st_ino
    supermin.build([prepared], good_output)
    assert not (good_output / "precious").exists() and (good_output / "usr/bin/bash").exists()
    assert good_output.stat().st_ino != inode
    assert [p.name for p in good_output.parent.iterdir()] == ["out"]


def test_non_root_chroot_build(prepared, nobody_dir):
    """As `nobody`: the build works, files belong to the builder (no chown
    without root), modes are kept, and unreadable host files are skipped
    with one warning instead of failing the build or being copied empty."""
    import pwd
    appliance = nobody_dir / "chroot-sd"
    shutil.copytree(prepared, appliance)
    for p in [appliance, *appliance.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    out = nobody_dir / "chroot-app"
    r = run_as_nobody(nobody_dir, "--build", "-f", "chroot", str(appliance), "-o", str(out))
    assert r.returncode == 0, r.stderr
    nobody = pwd.getpwnam("nobody").pw_uid
    bash = out / "usr/bin/bash"
    assert bash.stat().st_uid == nobody and bash.stat().st_mode & 0o777 == 0o755
    assert bash.read_bytes() == Path("/usr/bin/bash").read_bytes()
    unreadable = [l for l in r.stderr.splitlines() if "unreadable by this user" in l]
    assert len(unreadable) <= 1
    for line in unreadable:  # whatever was skipped is absent, never an empty copy
        first = line.split(": ", 2)[-1].split(", ")[0]
        assert not (out / first.lstrip("/")).exists() or (out / first.lstrip("/")).stat().st_size > 0


def test_the_public_namespace_holds_only_the_api():
    """`dir(supermin)` shows the API, not the modules and typing names the
    implementation uses."""
    public = {n for n in dir(supermin) if not n.startswith("_")}
    assert public == set(supermin.__all__) - {"__version__"}, public ^ set(supermin.__all__)


def test_python_callers_get_warnings_and_log_records(prepared, tmp_path, caplog):
    """From Python, a warning is a SuperminWarning (a filter set to "error"
    stops the build and keeps the previous output) and `verbose` messages are
    records of the `supermin` logger; the command line still prints
    `supermin: warning: ...` as upstream does."""
    import logging
    import warnings

    (tmp_path / "sd").mkdir()
    for f in prepared.iterdir():
        (tmp_path / "sd" / f.name).write_bytes(f.read_bytes())
    # A hostfile on /proc: skipped, with one warning.
    (tmp_path / "sd" / "hostfiles").write_text("/proc/self/status\n")
    out = tmp_path / "app"
    with caplog.at_level(logging.INFO, logger="supermin"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            supermin.build([tmp_path / "sd"], out, verbose=1)
    assert [w.category for w in caught] == [supermin.SuperminWarning], caught
    assert "pseudo filesystems" in str(caught[0].message)
    assert any("packages" in r.getMessage() for r in caplog.records if r.name == "supermin")
    before = sorted(p.name for p in out.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error", supermin.SuperminWarning)
        try:
            supermin.build([tmp_path / "sd"], out)
        except supermin.SuperminWarning:
            pass
        else:
            raise AssertionError("the warning did not stop the build")
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "sd"]
    r = run_cli("--build", "-f", "chroot", str(tmp_path / "sd"), "-o", str(out))
    assert "supermin: warning: 1 host files are on kernel pseudo filesystems" in r.stderr, r.stderr
