"""The Python API as Python users meet it: errors that name the culprit
(one parametrised table of type, attributes and message), files as values
and as DataFrames, owners of paths on a merged-/usr system with dpkg as
the oracle, an appliance's files with their origins and the diff of two,
pickling across processes, signatures, docstrings and module names."""

from __future__ import annotations

import concurrent.futures
import inspect
import os
import pickle
import random
import re
import subprocess
from pathlib import Path

import pytest

import supermin
from conftest import run_cli


@pytest.fixture(scope="module")
def host() -> supermin.Backend:
    return supermin.Backend.detect()


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.deb"
    path.write_text("hello")
    return path


# (what is called, exception type, attributes it must carry, message pattern)
ERRORS = [
    ("Backend.open('bogus')", lambda t: supermin.Backend.open("bogus"), supermin.UsageError, {},
     r"unknown package manager 'bogus' \(known: dpkg, rpm, pacman, apk\)$"),
    ("Package.from_file(text)", lambda t: supermin.Package.from_file(_text_file(t)), supermin.BackendError,
     {"path": lambda t: _text_file(t)}, r"notes\.deb: not a package file supermin reads"),
    ("BuildResult.from_output(missing)", lambda t: supermin.BuildResult.from_output(t / "missing"),
     supermin.OutputError, {"path": lambda t: t / "missing"}, r"missing: not a build output directory"),
    ("Backend.package(unknown)", lambda t: supermin.Backend.detect().package("no-such-package"),
     supermin.PackageNotFoundError, {"names": lambda t: ["no-such-package"]}, r"'no-such-package' is not installed"),
    ("build(format='ext4')", lambda t: supermin.build(["bash"], t / "out", format="ext4"), supermin.UsageError, {},
     r"unknown format 'ext4': use chroot, ext2, initramfs, tar$"),
    ("build(size='lots')", lambda t: supermin.build(["bash"], t / "out", format="ext2", size="lots"),
     supermin.UsageError, {}, r"cannot parse size field 'lots'"),
    ("build(output in a missing directory)",
     lambda t: supermin.build(supermin.prepare(["bash"], t / "sd"), t / "no/such/dir/out"), supermin.OutputError,
     {"path": lambda t: t / "no/such/dir/out"}, r"no/such/dir/out: cannot open the directory it goes in: No such file or directory$"),
    ("prepare(42)", lambda t: supermin.prepare([42], t / "sd"), supermin.UsageError, {},
     r"expected package names or Package objects, not int"),
]


@pytest.mark.parametrize("label, call, kind, attrs, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_the_culprit(tmp_path, label, call, kind, attrs, message):
    with pytest.raises(supermin.SuperminError) as info:
        call(tmp_path)
    e = info.value
    assert type(e) is kind, f"{label}: {type(e).__name__}: {e}"
    assert type(e).__module__ == "supermin"
    assert re.search(message, str(e)), str(e)
    assert "(os error" not in str(e) and "/." not in str(e).replace("/./", ""), str(e)
    for name, want in attrs.items():
        assert getattr(e, name) == want(tmp_path), (name, getattr(e, name, None))
    assert not list(tmp_path.glob(".*")), "no staging left"


def test_a_bare_name_that_is_a_directory_gets_a_hint(tmp_path, monkeypatch):
    supermin.prepare(["bash"], tmp_path / "sd")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(supermin.PackageNotFoundError, match=r"did you mean the appliance directory \./sd\? pass a path"):
        supermin.build(["sd"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # A path is an appliance, as the hint says.
    assert supermin.build([Path("sd")], tmp_path / "out").format == "chroot"


def test_packages_are_accepted_wherever_names_are(host, tmp_path):
    bash = host.package("bash")
    assert host.package(bash) == bash
    assert host.resolve([bash]) == host.resolve(["bash"])
    supermin.prepare([bash], tmp_path / "sd")
    assert supermin.Appliance.load(tmp_path / "sd").packages == ["bash"]
    result = supermin.build([bash], tmp_path / "out")
    assert bash in result.packages


def test_files_are_values_and_a_dataframe_has_a_column_per_field(host):
    import pandas as pd  # scripts/setup.sh installs it: the test runs everywhere the suite does
    bash = host.package("bash")
    files = bash.files
    again = host.package("bash").files
    assert files == again and hash(files[0]) == hash(again[0]) and len(set(files) | set(again)) == len(files)
    sh = next(f for f in files if f.path in ("/bin/bash", "/usr/bin/bash"))
    assert sh.kind == "file" and sh.size == Path(sh.path).stat().st_size and sh.package == "bash"
    assert sh.to_dict() == {"path": sh.path, "kind": "file", "mode": sh.mode, "size": sh.size,
                            "is_config": False, "package": "bash", "origin": "package"}
    df = pd.DataFrame(files)
    assert list(df.columns) == ["path", "kind", "mode", "size", "is_config", "package", "origin"]
    assert len(df) == len(files) and df["size"].sum() > 1_000_000
    # A package read from a file has sizes from the package.
    debs = sorted(Path("/var/cache/apt/archives").glob("*.deb"))
    if debs:
        p = supermin.Package.from_file(debs[0])
        assert all(f.package == p.name for f in p.files)


def test_owners_understand_merged_usr_as_dpkg_S_does(host):
    """dpkg lists /bin/ls (Debian 12 moved it under /usr but its list did
    not follow): dpkg -S /usr/bin/ls finds nothing, owner() finds
    coreutils by either path.  Then a sample of every package's files
    against dpkg -S."""
    assert subprocess.run(["dpkg", "-S", "/usr/bin/ls"], capture_output=True).returncode != 0
    assert host.owner("/usr/bin/ls").name == host.owner("/bin/ls").name == "coreutils"
    assert host.owner("/no/such/file") is None
    usr = {p.name for p in host.owners("/usr")}
    assert {"coreutils", "bash"} <= usr
    rng = random.Random(7)
    packages = rng.sample(host.packages(), 20)
    for p in packages:
        regular = [f.path for f in p.files if f.kind == "file"]
        for path in rng.sample(regular, min(3, len(regular))):
            out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout
            oracle = {o.split(":")[0] for line in out.splitlines() for o in line.rsplit(": ", 1)[0].split(", ")}
            assert oracle <= {o.name for o in host.owners(path)}, (path, oracle)


def test_appliance_files_have_origins_and_two_appliances_diff(tmp_path):
    supermin.prepare(["bash"], tmp_path / "a")
    supermin.prepare(["bash", "gawk"], tmp_path / "b")
    a, b = supermin.Appliance.load(tmp_path / "a"), supermin.Appliance.load(tmp_path / "b")
    files = {f.path: f for f in a.files()}
    assert files["/etc/bash.bashrc"].origin == "base image" and files["/etc/bash.bashrc"].is_config
    assert any(f.origin == "package" and f.package == "bash" for f in files.values())
    built = supermin.build(a, tmp_path / "out")
    on_disk = {"/" + str(p.relative_to(built.output)) for p in built.output.rglob("*")}
    assert set(files) == on_disk, (set(files) ^ on_disk)
    diff = a.diff(b)
    added = {f.path for f in diff.added}
    assert any(p.endswith("/gawk") for p in added) and diff
    # Naming gawk makes it base-files' awk: mawk, chosen before, goes.
    assert {f.package for f in diff.removed if f.origin == "package"} == {"mawk"}
    assert not a.diff(a)
    import pandas as pd

    frame = pd.DataFrame(a.files())
    assert list(frame.columns) == ["path", "kind", "mode", "size", "is_config", "package", "origin"]
    assert set(frame["origin"]) >= {"package", "base image", "alternatives"}
    assert "<details" in diff._repr_html_() and "gawk" in diff._repr_html_()
    assert diff.to_dict()["added"][0]["path"] == sorted(added)[0]


def _resolve_in_a_child(names):
    return [p.full_name for p in supermin.Backend.detect().resolve(names)]


def test_everything_pickles_and_a_child_process_raises_the_real_error(host, tmp_path):
    bash = host.package("bash")
    assert pickle.loads(pickle.dumps(bash)) == bash
    assert pickle.loads(pickle.dumps(bash.files)) == bash.files
    sd = tmp_path / "sd"
    app = supermin.prepare(["bash"], sd)
    assert pickle.loads(pickle.dumps(app)).inputs == app.inputs
    assert pickle.loads(pickle.dumps(host)).name == host.name
    result = supermin.build(app, tmp_path / "out")
    again = pickle.loads(pickle.dumps(result))
    assert again.packages == result.packages and again.output == result.output
    try:
        host.package("no-such-package")
    except supermin.PackageNotFoundError as e:
        copy = pickle.loads(pickle.dumps(e))
        assert type(copy) is supermin.PackageNotFoundError and copy.names == ["no-such-package"]
    for cls in [c for c in PUBLIC if isinstance(c, type) and issubclass(c, supermin.SuperminError)]:
        e = cls("message")
        e.path = Path("/x")
        copy = pickle.loads(pickle.dumps(e))
        assert type(copy) is cls and str(copy) == "message" and copy.path == Path("/x"), cls
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        assert pool.submit(_resolve_in_a_child, ["bash"]).result() == [p.full_name for p in host.resolve(["bash"])]
        with pytest.raises(supermin.PackageNotFoundError) as info:
            pool.submit(_resolve_in_a_child, ["bsah"]).result()
        assert info.value.names == ["bsah"]


PUBLIC = [getattr(supermin, name) for name in supermin.__all__]


def test_module_names_signatures_and_docstrings():
    for obj in PUBLIC:
        if isinstance(obj, type):
            assert obj.__module__ == "supermin", obj
    callables = [o for o in PUBLIC if callable(o) and not isinstance(o, type)]
    for cls in (supermin.Backend, supermin.Package, supermin.Appliance):
        callables += [getattr(cls, n) for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))]
        for name in dir(cls):
            attr = inspect.getattr_static(cls, name)
            if not name.startswith("_") and type(attr).__name__ == "getset_descriptor":
                assert attr.__doc__, f"{cls.__name__}.{name} has no docstring"
    for f in callables:
        sig = inspect.signature(f)
        for p in sig.parameters.values():
            assert p.default is not Ellipsis, f"{f}: {sig}"


def test_help_lists_the_environment_and_examples():
    out = run_cli("--help").stdout
    for word in ("SUPERMIN_KERNEL", "SUPERMIN_KERNEL_VERSION", "SUPERMIN_MODULES", "SOURCE_DATE_EPOCH", "examples:"):
        assert word in out, word


def test_a_closure_says_why_each_package_is_in(host):
    c = host.resolve(["bash"])
    assert isinstance(c, supermin.Closure) and isinstance(c, list) and c == list(host.resolve(["bash"]))
    assert c.why["bash"] == "named" and set(c.why) == {p.name for p in c}
    depends = subprocess.run(["dpkg-query", "-W", "-f", "${Pre-Depends}, ${Depends}", "bash"],
                             capture_output=True, text=True, check=True).stdout
    for p in c:
        if c.why[p.name].startswith("bash: "):
            assert c.why[p.name][len("bash: "):] in depends, c.why[p.name]
    assert c.why["mawk"] == "base-files: awk", "a virtual package, provided"
    assert pickle.loads(pickle.dumps(c)).why == c.why


def test_html_reprs_read_left_to_right_and_keep_every_row(host, tmp_path):
    import html as escape

    bash = host.package("bash")
    h = bash._repr_html_()
    assert "<details" in h and 'style="text-align:left"' in h and "text-align:right" not in h
    assert all(escape.escape(f.path) in h for f in bash.files), "every file reachable, none cut"
    assert "why included" in host.resolve(["bash"])._repr_html_()
    assert f"<td style=\"text-align:left\">{len(host.packages())}</td>" in host._repr_html_()
    assert "supermin appliance" in supermin.prepare(["bash"], tmp_path / "sd")._repr_html_()
    r = supermin.build(["bash"], tmp_path / "app", format="ext2", modules=[], size="64M")
    h = r._repr_html_()
    assert r.kernel_version in h and "MiB" in h and "libc6" in h


def test_from_output_reads_back_what_the_output_records(host, tmp_path):
    """Every build leaves a stamp (a file, or a chroot's attribute): its
    packages, found again in the database, and its kernel."""
    ext2 = supermin.build(["bash"], tmp_path / "ext2", format="ext2", modules=[], size="64M")
    back = supermin.BuildResult.from_output(tmp_path / "ext2")
    assert back.format == "ext2" and back.packages == ext2.packages and back.kernel_version == ext2.kernel_version
    assert repr(back).endswith(f": {len(ext2.packages)} packages>")
    assert json_names(back.sbom("cyclonedx")) == sorted(p.name for p in ext2.packages)
    chroot = supermin.build(["bash"], tmp_path / "chroot")
    assert supermin.BuildResult.from_output(tmp_path / "chroot").packages == chroot.packages
    # An upstream-made output has no stamp: /packagelist, when there is one.
    plain = tmp_path / "plain"
    (plain / "etc").mkdir(parents=True)
    (plain / "packagelist").write_text("".join(f"{p.full_name}\n" for p in chroot.packages))
    assert supermin.BuildResult.from_output(plain).packages == chroot.packages


def json_names(text: str) -> list:
    import json

    return sorted(c["name"] for c in json.loads(text)["components"])


def test_every_stage_reports_its_name_and_counts_on_the_callers_thread(tmp_path):
    """A build from names, bootable: each stage starts and ends (done ==
    total at its end), in order, each call on the caller's thread."""
    import threading

    seen = []
    caller = threading.get_ident()

    def callback(stage, done, total):
        assert threading.get_ident() == caller
        seen.append((stage, done, total))

    r = supermin.build(["bash"], tmp_path / "app", format="ext2", modules=[], size="64M", progress=callback)
    stages = list(dict.fromkeys(s for s, _, _ in seen))
    assert stages == ["resolving dependencies", "reading file lists", "config files", "listing files",
                      "finding the kernel", "writing files", "writing the image", "writing the initrd"], stages
    for stage in stages:
        last = [(d, t) for s, d, t in seen if s == stage][-1]
        assert last[0] == last[1], (stage, last)
    resolved = [(d, t) for s, d, t in seen if s == "resolving dependencies"][-1]
    assert resolved == (len(r.packages), len(r.packages))


def test_progress_true_draws_in_a_notebook_and_says_nothing_elsewhere(tmp_path, capsys):
    from supermin._progress import NotebookProgress, resolve_progress

    # Not a terminal, not a notebook (pytest): no bar, no error.
    assert resolve_progress(True) is None
    supermin.build(["bash"], tmp_path / "out", progress=True)
    assert capsys.readouterr().err == ""
    # The notebook bar's HTML: one row per stage, each with its counts.
    bar = NotebookProgress()
    bar._tqdm = None
    bar._stages = {"resolving dependencies": [8, 8], "writing files": [5, 10]}
    page = bar.html()
    assert page.count("<progress") == 2 and "50% 5/10" in page and "resolving dependencies" in page


def test_an_unpickled_package_is_found_again_in_the_database_as_it_is_now(tmp_path):
    import shutil

    root = tmp_path / "alpine"
    shutil.copytree(Path(__file__).parent / "data/apk/alpine-3.4-root", root, symlinks=True)
    busybox = supermin.Backend.open("apk", root=root).package("busybox")
    data = pickle.dumps(busybox)
    assert pickle.loads(data) == busybox
    db = root / "lib/apk/db/installed"
    db.write_text(db.read_text().replace("P:busybox\nV:1.24.2-r12", "P:busybox\nV:9.9-r0"))
    os.utime(db, (1, 1))
    with pytest.raises(supermin.PackageNotFoundError, match="no longer installed"):
        pickle.loads(data)
