"""DVC stage `composition`: see clusterlens.composition."""
from clusterlens.common import run_cli
from clusterlens.composition import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
