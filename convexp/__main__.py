"""`python -m convexp [overrides]`: one training job, or a sweep with -m."""

from __future__ import annotations

import hydra

from convexp.paths import CONFIG_DIR
from convexp.schema import register_configs
from convexp.task import run

register_configs()

# Launchers pickle the task function: decorate a thin module-level wrapper, not a closure.
main = hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(run)

if __name__ == "__main__":
    main()
