"""``python -m zmqhttp``: the same as the ``zmqhttp`` command."""

from __future__ import annotations

from zmqhttp.cli import main

if __name__ == "__main__":
    main()
