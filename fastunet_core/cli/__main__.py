"""Allow ``python -m fastunet_core.cli`` (and ``torchrun -m fastunet_core.cli``)."""

from fastunet_core.cli import main

main()
