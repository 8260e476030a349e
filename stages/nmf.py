"""DVC stage `nmf`: see clusterlens.nmf."""
from clusterlens.common import run_cli
from clusterlens.nmf import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
