"""Entry point of the headless client: `python -m rezcty_core.client run|batch|check|free ...`.

The code lives in `rezcty_core.factory` (api, workflow, validate, batch, pool, cli).
"""
from rezcty_core.factory.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
