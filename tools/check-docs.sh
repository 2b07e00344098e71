#!/usr/bin/env bash
# Keeps the documents true to the tree (issue 15): docs/DESIGN.md's folder map lists exactly the folders under
# Sources/ and Tests/; every `Type.member` that docs/PEER-CHECKS.md cites is declared in the code; and every
# figure in README.md's status table appears in docs/BENCHMARKS.md. Prints what is off and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import os, re, sys

problems = []

# 1. The folder map: the fenced block under "## Folder map", two spaces of indent per level.
design = open("docs/DESIGN.md").read()
block = design.split("## Folder map", 1)[1].split("```", 2)[1]
mapped, stack = set(), []
for line in block.splitlines():
    m = re.match(r"( *)([A-Za-z0-9_.+-]+)/", line)
    if not m:
        continue
    depth = len(m.group(1)) // 2
    stack[depth:] = [m.group(2)]
    mapped.add("/".join(stack))
actual = set()
for top in ("Sources", "Tests"):
    for root, dirs, _ in os.walk(top):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        actual.add(root)
for path in sorted(actual - mapped):
    problems.append(f"docs/DESIGN.md: the folder map does not list {path}/")
for path in sorted(p for p in mapped - actual if p.split("/")[0] in ("Sources", "Tests")):
    problems.append(f"docs/DESIGN.md: the folder map lists {path}/, which does not exist")

# 2. Every `Type.member` cited in PEER-CHECKS.md is declared: the type somewhere, the member somewhere.
code = ""
for top in ("Sources", "Tests"):
    for root, _, files in os.walk(top):
        for name in files:
            if name.endswith(".swift"):
                code += open(os.path.join(root, name)).read()
checks = open("docs/PEER-CHECKS.md").read()
for type_name, member in sorted(set(re.findall(r"`([A-Z][A-Za-z]+)\.([a-z][A-Za-z]*)`", checks))):
    if not re.search(rf"\b(class|struct|enum|protocol|extension|typealias)\s+{type_name}\b", code):
        problems.append(f"docs/PEER-CHECKS.md: no type {type_name} (cited as {type_name}.{member})")
    elif not re.search(rf"\b(func|var|let|case)\s+{member}\b", code):
        problems.append(f"docs/PEER-CHECKS.md: {type_name}.{member} is not declared anywhere")

# 3. The README's status table: each figure (a number) appears in BENCHMARKS.md.
readme = open("README.md").read()
status = readme.split("## Status", 1)[1].split("\n## ", 1)[0]
benchmarks = open("docs/BENCHMARKS.md").read()
for row in status.splitlines():
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    if len(cells) < 4 or cells[0] in ("goal", "") or set(cells[0]) <= set("-: "):
        continue
    figure = re.sub(r"<!--.*?-->", "", cells[1])
    for number in re.findall(r"\d[\d,]*(?:\.\d+)?", figure):
        if number not in benchmarks:
            problems.append(f"README.md: the status figure {number} ({cells[0][:50]}) is not in docs/BENCHMARKS.md")

for p in problems:
    print(p)
print(f"check-docs: {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY
