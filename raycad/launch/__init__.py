"""Run raycad beyond one machine: Ray jobs, the AWS Ray cluster launcher, and SageMaker training jobs.

All of them run the same library code through the thin entrypoints in ``jobs/`` (``finetune.py``, ``pretrain.py``,
``tune.py``, ``import_omics.py``), which hand their arguments to the ``raycad`` CLI:

* **Ray jobs** on any cluster: ``ray job submit --working-dir . -- python jobs/finetune.py ...``.
* **AWS cluster launcher**: ``ray up cluster.yaml`` (CPU head, autoscaling g5 GPU workers);
  `create_ssh_security_group` makes the SSH-restricted security group that file names.
* **SageMaker**: `launch_sagemaker` (``raycad launch sagemaker``) packages the checkout to S3 and starts a
  training job whose hosts form a Ray cluster through `raycad.launch.bootstrap`.

Run outputs are published next to their checkpoints by `raycad.storage.publish_run`.
"""

from raycad.launch.aws import check_ssh_cidr, create_ssh_security_group
from raycad.launch.sagemaker import (
    LaunchResult,
    SageMakerConfig,
    build_source_tarball,
    follow_training_job,
    launch_sagemaker,
    list_source_files,
    training_job_request,
)

__all__ = [
    "LaunchResult",
    "SageMakerConfig",
    "build_source_tarball",
    "check_ssh_cidr",
    "create_ssh_security_group",
    "follow_training_job",
    "launch_sagemaker",
    "list_source_files",
    "training_job_request",
]
