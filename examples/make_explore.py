"""Writes examples/explore.ipynb (the notebook is generated, so that its
cells stay reviewable as code here).  Run: python examples/make_explore.py"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("# Exploring packages and appliances with supermin\n\n"
                      "Everything below reads this machine's package database in-process; nothing is installed."),
    new_code_cell("import tempfile, pathlib\nimport pandas as pd\nimport supermin\n\n"
                  "work = pathlib.Path(tempfile.mkdtemp(prefix='supermin-notebook-'))\n"
                  "b = supermin.Backend.detect()\nb"),
    new_markdown_cell("## A package, and its files as a DataFrame"),
    new_code_cell("bash = b.package('bash')\nbash"),
    new_code_cell("files = pd.DataFrame(bash.files)\nfiles.sort_values('size', ascending=False).head(5)"),
    new_markdown_cell("## A closure: what comes with bash and coreutils, and why"),
    new_code_cell("closure = b.resolve(['bash', 'coreutils'])\nclosure"),
    new_markdown_cell("## Who owns a path (merged /usr understood)"),
    new_code_cell("b.owner('/usr/bin/ls'), b.owner('/bin/ls')"),
    new_markdown_cell("## Two appliances, and what differs between them"),
    new_code_cell("small = supermin.prepare(['bash'], work / 'small')\n"
                  "bigger = supermin.prepare(['bash', 'gawk'], work / 'bigger')\n"
                  "small.diff(bigger)"),
    new_markdown_cell("## A build, with progress, and an SBOM of it"),
    new_code_cell("result = supermin.build(small, work / 'chroot', progress=True)\nresult"),
    new_code_cell("import json\nsbom = json.loads(result.sbom('cyclonedx'))\n"
                  "pd.DataFrame([{'name': c['name'], 'version': c['version'], 'purl': c['purl']} "
                  "for c in sbom['components']])"),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}})
nbformat.write(nb, Path(__file__).with_name("explore.ipynb"))
