"""The ``hydra/sweeper=batched`` plugin of implicit-bias (discovered by Hydra in the
``hydra_plugins`` namespace package)."""
