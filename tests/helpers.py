"""Helpers shared by the tests that interrupt long runs."""


class Crash(Exception):
    """Stands for a kill: unlike Ctrl-C, nothing catches it to save a checkpoint."""


def raise_at(step: int, exc: type[BaseException]):
    """An ``on_step`` callback that raises ``exc`` when the run reaches global step ``step``."""

    def on_step(s: int) -> None:
        if s == step:
            raise exc

    return on_step
