"""Studies: experiments that are not one optimizer run to convergence.

An experiment config that sets ``study: NAME`` is handed, composed and resolved, to
``run(config, out_dir)`` of the module registered here under NAME. A study writes its own
records, summary and figures into ``out_dir`` (atomically, like every other record) and
raises :class:`~implicit_bias.params.ConfigError` for bad input, which the command turns
into one line and exit code 2.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..params import ConfigError

#: study name → module (imported only when that study runs)
STUDIES: dict[str, str] = {
    "rms_norm": "implicit_bias.studies.rms_norm",
    "distributed": "implicit_bias.studies.distributed",
}


def run_study(config: Mapping[str, Any], out_dir: Path) -> Any:
    """Run the study that ``config['study']`` names, writing into ``out_dir``."""
    name = config["study"]
    if name not in STUDIES:
        allowed = ", ".join(sorted(STUDIES)) or "none registered"
        raise ConfigError(f"The 'study' setting must be one of {{{allowed}}}. Got {name!r} instead.")
    module = importlib.import_module(STUDIES[name])
    return module.run(config, out_dir)
