"""DVC stage `tsne`: see clusterlens.tsne."""
from clusterlens.common import run_cli
from clusterlens.tsne import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
