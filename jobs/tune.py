"""Ray job: per-task hyper-parameter search. Takes exactly the arguments of ``raycad tune``.

    ray job submit --working-dir . -- python jobs/tune.py --tasks human_nontata_promoters --num-samples 16

Run on a cluster it joins that cluster (``RAY_ADDRESS``, set by ``ray job submit``); the exit status is
non-zero when the sweep fails.
"""

import sys

from raycad.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
