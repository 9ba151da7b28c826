"""``python -m mailworker.cli``: the same as the ``mailworker`` command."""

from mailworker.cli import main

main()
