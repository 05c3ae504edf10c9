"""`python -m embedplat.cli`: the same as the `embedplat` command."""

from __future__ import annotations

from embedplat.cli import main

main()
