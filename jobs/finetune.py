"""Ray job: fine-tune Caduceus. Takes exactly the arguments of ``raycad finetune`` (config file, overrides).

    ray job submit --working-dir . -- python jobs/finetune.py human_nontata_promoters \
        --config my.yaml --set train.epochs=5 --set run.storage_path=s3://my-bucket/raycad

Run on a cluster it joins that cluster (``RAY_ADDRESS``, set by ``ray job submit``); the exit status is
non-zero when the run fails.
"""

import sys

from raycad.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
