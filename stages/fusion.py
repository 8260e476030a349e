"""DVC stage `fusion`: see clusterlens.fusion."""
from clusterlens.common import run_cli
from clusterlens.fusion import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
