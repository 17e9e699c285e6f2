"""implicit-bias: which of the many exact solutions does an optimizer find, and does theory agree?

Data flows one way: config (``conf/``) → :mod:`~implicit_bias.build` → :mod:`~implicit_bias.runner`
→ :mod:`~implicit_bias.predictions` → :mod:`~implicit_bias.results` → :mod:`~implicit_bias.summary`.
A batched sweep (``hydra/sweeper=batched``) groups its jobs with :mod:`~implicit_bias.batch`
and runs each group in one :func:`~implicit_bias.runner.run_batch` loop before recording.
"""

__version__ = "0.1.0"
