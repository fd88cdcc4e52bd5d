"""Attribute perf samples of a compiled zmqhttp to the nearest compiled function.

``perf script -i perf.data | python bench/perf_attrib.py [N]`` prints, for the
process's Python thread, the share of samples whose nearest mypyc function up
the stack (``CPyDef_*``) is each function, with the leaf symbols that took the
time (CPython's dict lookups and allocations, the kernel, libzmq). perf's own
report attributes those leaves to CPython; this says which of our functions
caused them. Needs a profile recorded with ``--call-graph dwarf`` (mypyc's C is
built without frame pointers). See bench/profile.sh.
"""

from __future__ import annotations

import collections
import sys


def main() -> None:
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    total = 0
    owners: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    comm = ""
    stack: list[str] = []

    def flush() -> None:
        nonlocal total
        if comm != "python" or not stack:
            return
        total += 1
        owner = next((f for f in stack if f.startswith(("CPyDef_", "CPyPy_"))), None)
        if owner is None:
            owner = "<interpreted>" if any("EvalFrame" in f for f in stack[:3]) else (
                "<no compiled frame> " + stack[0])
        owner = owner.replace("CPyPy_", "CPyDef_").split("+")[0]
        owners[owner] += 1
        leaves[owner][stack[0].split("+")[0]] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            stack, comm = [], ""
        elif not line[0].isspace():
            comm = line.split()[0]
        else:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                stack.append(parts[1].rsplit(" (", 1)[0])
    flush()
    print(f"{total} samples of the Python thread")
    for owner, count in owners.most_common(top):
        detail = ", ".join(f"{leaf[:32]} {n}" for leaf, n in leaves[owner].most_common(3))
        print(f"{count / max(total, 1):6.1%}  {owner[:64]:64s}  {detail}")


if __name__ == "__main__":
    main()
