"""examples/explore.ipynb, executed as Jupyter executes it (nbclient, a
real IPython kernel): no cell errors, and its HTML outputs hold the
tables they promise (a package's folded file list, a closure with why
each package is in, a diff, a build's table), the progress bars as HTML
updated in place, and DataFrames of files and of the SBOM."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "examples/explore.ipynb"


def html_of(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.get("outputs", []))


def test_the_example_notebook_runs_and_shows_its_tables(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The venv's own kernel (ipykernel's python3), which imports this
    # checkout's supermin as the test process does.
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    backend, package, files, closure, owner, diff, build, sbom = code[0], *code[1:]
    assert "package manager" in html_of(backend) and "dpkg" in html_of(backend)
    assert "<details" in html_of(package) and "/usr/share/doc/bash" in html_of(package)
    assert all(f"<th>{column}</th>" in html_of(files) for column in ("path", "kind", "mode", "size", "package"))
    assert "why included" in html_of(closure) and "bash: libc6" in html_of(closure)
    assert "coreutils" in "".join(o.get("data", {}).get("text/plain", "") for o in owner.outputs)
    assert "added" in html_of(diff) and "gawk" in html_of(diff)
    shown = html_of(build)
    assert "<progress" in shown and "writing files" in shown, "the bars, updated in place"
    assert "supermin build" in shown and "chroot" in shown
    assert "pkg:deb/" in html_of(sbom)
