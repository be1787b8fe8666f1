"""`hydra/launcher=joblib` and `hydra/launcher=submitit_local` name convexp's launchers
(convexp/launchers.py: a killed worker fails only its own job).

conf/hydra/launcher/joblib.yaml and submitit_local.yaml set only their `_target_`: Hydra merges
each onto the plugin's schema of the same name (its fields, types and defaults), and says so in
a deprecation warning on every sweep, which this module silences for these two files alone.
(Storing the configs in Hydra's ConfigStore instead does not hold: Hydra's plugin scan
re-executes the plugins' config modules, which store their own again.) Imports neither torch
nor joblib.
"""

from __future__ import annotations

import warnings

OVERRIDDEN = ("joblib", "submitit_local")


def quiet_launcher_schema_warning() -> None:
    warnings.filterwarnings(
        "ignore", category=UserWarning,
        message=rf"\s*'hydra/launcher/({'|'.join(OVERRIDDEN)})' is validated against "
                "ConfigStore schema with the same name")
