"""``raycad launch ...``: run raycad jobs on SageMaker and prepare AWS for the Ray cluster launcher.

    raycad launch sagemaker --role-arn arn:aws:iam::123456789012:role/raycad --output-path s3://bucket/runs \\
        --instance-type ml.g5.12xlarge --instance-count 2 --job finetune -- --task human_nontata_promoters
    raycad launch aws-security-group --vpc-id vpc-0abc --ssh-cidr 203.0.113.7/32 --region us-east-1
"""

from __future__ import annotations

import argparse

from raycad.cli import add_config_args, config_from_args


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    launch = subparsers.add_parser("launch", help="run on SageMaker / prepare an AWS Ray cluster")
    sub = launch.add_subparsers(dest="launch_command", metavar="TARGET", required=True)

    sm = sub.add_parser("sagemaker", help="run a raycad job as a SageMaker training job (a Ray cluster)",
                        description="Package this checkout to S3 and run jobs/<job>.py on a Ray cluster "
                                    "formed by the SageMaker job's instances. Arguments after -- go to the job.")
    add_config_args(sm)
    sm.add_argument("--job", choices=("finetune", "pretrain", "tune", "import_omics"), default=None)
    sm.add_argument("--role-arn", default=None, help="SageMaker execution role ARN")
    sm.add_argument("--output-path", default=None, help="s3:// prefix for outputs, Ray storage and source")
    sm.add_argument("--job-name", default=None)
    sm.add_argument("--region", default=None)
    sm.add_argument("--image-uri", default=None, help="training image (default: AWS PyTorch GPU DLC)")
    sm.add_argument("--instance-type", default=None, help="e.g. ml.g5.2xlarge")
    sm.add_argument("--instance-count", type=int, default=None)
    sm.add_argument("--max-runtime", type=int, default=None, metavar="SECONDS")
    sm.add_argument("--spot", action="store_true", default=None, help="managed spot training")
    sm.add_argument("--no-wait", action="store_true", help="return after creating the job")
    sm.add_argument("job_args", nargs=argparse.REMAINDER, help="-- then the job's own arguments")
    sm.set_defaults(func=_sagemaker)

    sg = sub.add_parser("aws-security-group", help="create the SSH-restricted security group cluster.yaml names")
    sg.add_argument("--vpc-id", required=True)
    sg.add_argument("--ssh-cidr", required=True, help="the only source allowed to SSH, e.g. 203.0.113.7/32")
    sg.add_argument("--name", default="raycad-cluster")
    sg.add_argument("--region", default=None)
    sg.set_defaults(func=_security_group)


def _sagemaker(args: argparse.Namespace) -> int:
    from raycad.launch.sagemaker import SageMakerConfig, launch_sagemaker

    job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
    cfg = config_from_args(
        SageMakerConfig, args, job=args.job, role_arn=args.role_arn, output_path=args.output_path,
        job_name=args.job_name, region=args.region, image_uri=args.image_uri, instance_type=args.instance_type,
        instance_count=args.instance_count, max_runtime_s=args.max_runtime, use_spot=args.spot,
        job_args=job_args or None, wait=False if args.no_wait else None)
    result = launch_sagemaker(cfg)
    return 0 if result.ok else 1


def _security_group(args: argparse.Namespace) -> int:
    from raycad.launch.aws import create_ssh_security_group

    group_id = create_ssh_security_group(vpc_id=args.vpc_id, ssh_cidr=args.ssh_cidr, name=args.name,
                                         region=args.region)
    print(group_id)
    return 0
