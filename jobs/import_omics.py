"""Ray job: import sequences into an AWS HealthOmics sequence store (``raycad omics import`` arguments).

    ray job submit --working-dir . -- python jobs/import_omics.py --help

The exit status is non-zero when any source fails to import.
"""

import sys

from raycad.cli import main

if __name__ == "__main__":
    sys.exit(main(["omics", "import", *sys.argv[1:]]))
