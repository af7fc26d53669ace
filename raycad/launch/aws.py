"""AWS networking for the Ray cluster launcher: a security group that allows SSH from one CIDR only.

Ray's AWS launcher creates its own security group with SSH open to 0.0.0.0/0 for every node type that
does not name one, so `cluster.yaml` names this group (``SecurityGroupIds``) on every node type instead.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from raycad.config import ConfigError
from raycad.runtime import get_logger

log = get_logger("raycad.launch.aws")


MIN_PREFIX = {4: 16, 6: 48}
"""The broadest SSH source range accepted: an IPv4 /16 (65,536 addresses) or an IPv6 /48."""


def check_ssh_cidr(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse `cidr`; refuse malformed ranges and any range broader than `MIN_PREFIX` (not only a /0:
    ``0.0.0.0/1`` is half the internet), and non-public ranges that cannot be where SSH comes from."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError as err:
        raise ConfigError(f"invalid SSH CIDR {cidr!r}: {err}") from None
    if network.prefixlen < MIN_PREFIX[network.version]:
        raise ConfigError(f"SSH CIDR {cidr!r} opens SSH to {network.num_addresses:,} addresses (broader than "
                          f"/{MIN_PREFIX[network.version]}); give your own address, e.g. 203.0.113.7/32")
    if network.is_unspecified or network.is_multicast or network.is_reserved:
        raise ConfigError(f"SSH CIDR {cidr!r} is not a range SSH can come from")
    return network


def create_ssh_security_group(*, vpc_id: str, ssh_cidr: str, name: str = "raycad-cluster",
                              region: str | None = None, ec2_client: Any = None) -> str:
    """Create a group allowing SSH (tcp/22) from `ssh_cidr` and all traffic between its members; its id."""
    network = check_ssh_cidr(ssh_cidr)
    if ec2_client is None:
        import boto3

        ec2_client = boto3.client("ec2", region_name=region)
    group_id = ec2_client.create_security_group(
        GroupName=name, VpcId=vpc_id,
        Description=f"raycad Ray cluster: SSH from {network} only, all traffic between cluster nodes",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": name}]}],
    )["GroupId"]
    ranges = ({"Ipv6Ranges": [{"CidrIpv6": str(network), "Description": "SSH for ray up / ray attach"}]}
              if network.version == 6 else
              {"IpRanges": [{"CidrIp": str(network), "Description": "SSH for ray up / ray attach"}]})
    ec2_client.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id, "Description": "Ray intra-cluster"}]},
    ])
    log.info(f"created security group {group_id} ({name}) in {vpc_id}: SSH from {network}")
    return group_id
