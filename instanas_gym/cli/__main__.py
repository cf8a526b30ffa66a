"""``python -m instanas_gym.cli``: the same as the ``instanas-gym`` command."""

from instanas_gym.cli import main

main()
