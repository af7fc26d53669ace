"""Ray job: masked-LM pre-training of Caduceus. Takes exactly the arguments of ``raycad pretrain``.

    ray job submit --working-dir . -- python jobs/pretrain.py 's3://my-bucket/genomes/*.fa.gz' \
        --holdout chr8 --max-tokens 2000000000 --gpu --workers 4 --set run.storage_path=s3://my-bucket/raycad

Run on a cluster it joins that cluster (``RAY_ADDRESS``, set by ``ray job submit``); the exit status is
non-zero when the run fails.
"""

import sys

from raycad.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
