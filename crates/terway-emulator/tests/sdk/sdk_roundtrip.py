#!/usr/bin/env python3
"""Drive the emulator with the UNMODIFIED official Alibaba Cloud Python SDKs
(alibabacloud_ecs20140526 / alibabacloud_vpc20160428): create, attach, assign, describe,
unassign, detach and delete an ENI, plus an error answer and a VPC call.

Configuration comes from the environment (set by tests/sdk.rs):
EMU_ENDPOINT (host:port), EMU_AK, EMU_SECRET, EMU_REGION, EMU_VSWITCH, EMU_INSTANCE,
EMU_SIGNATURE ("v3" = ACS3-HMAC-SHA256, the SDK default; "v2" = legacy HMAC-SHA1).
Exit code 0 on success; any failure raises.
"""
import os
import sys
import time

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient

ENDPOINT = os.environ["EMU_ENDPOINT"]
REGION = os.environ["EMU_REGION"]
VSW = os.environ["EMU_VSWITCH"]
INSTANCE = os.environ["EMU_INSTANCE"]
SIGNATURE = os.environ.get("EMU_SIGNATURE", "v3")


def config():
    cfg = open_api_models.Config(
        access_key_id=os.environ["EMU_AK"],
        access_key_secret=os.environ["EMU_SECRET"],
        endpoint=ENDPOINT,
        protocol="http",
        region_id=REGION,
    )
    if SIGNATURE == "v2":
        cfg.signature_algorithm = "v2"
    return cfg


def eni_status(ecs, eni_id):
    req = ecs_models.DescribeNetworkInterfacesRequest(region_id=REGION, network_interface_id=[eni_id])
    sets = ecs.describe_network_interfaces(req).body.network_interface_sets.network_interface_set
    assert len(sets) == 1, f"expected one ENI, got {len(sets)}"
    return sets[0]


def wait_status(ecs, eni_id, want, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if eni_status(ecs, eni_id).status == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"{eni_id} never became {want}")


def main():
    ecs = EcsClient(config())
    vpc = VpcClient(config())

    types = ecs.describe_instance_types(
        ecs_models.DescribeInstanceTypesRequest(instance_types=["ecs.g7.4xlarge"])
    ).body.instance_types.instance_type
    assert types[0].eni_quantity == 8 and types[0].eni_private_ip_address_quantity == 30, types[0]

    vsws = vpc.describe_vswitches(vpc_models.DescribeVSwitchesRequest(region_id=REGION, v_switch_id=VSW)).body
    assert vsws.v_switches.v_switch[0].available_ip_address_count > 0

    created = ecs.create_network_interface(
        ecs_models.CreateNetworkInterfaceRequest(
            region_id=REGION,
            v_switch_id=VSW,
            security_group_ids=["sg-sdk"],
            secondary_private_ip_address_count=1,
            description="interface create by terway",
            tag=[ecs_models.CreateNetworkInterfaceRequestTag(key="creator", value="terway")],
            client_token="sdk-token-" + SIGNATURE,
        )
    ).body
    eni = created.network_interface_id
    assert eni.startswith("eni-") and created.status == "Available", created
    assert len(created.private_ip_sets.private_ip_set) == 2

    ecs.attach_network_interface(
        ecs_models.AttachNetworkInterfaceRequest(region_id=REGION, network_interface_id=eni, instance_id=INSTANCE)
    )
    wait_status(ecs, eni, "InUse")

    assigned = ecs.assign_private_ip_addresses(
        ecs_models.AssignPrivateIpAddressesRequest(
            region_id=REGION, network_interface_id=eni, secondary_private_ip_address_count=2
        )
    ).body
    new_ips = assigned.assigned_private_ip_addresses_set.private_ip_set.private_ip_address
    assert len(new_ips) == 2, new_ips

    attr = ecs.describe_network_interface_attribute(
        ecs_models.DescribeNetworkInterfaceAttributeRequest(region_id=REGION, network_interface_id=eni)
    ).body
    assert attr.status == "InUse" and attr.instance_id == INSTANCE, attr
    assert len(attr.private_ip_sets.private_ip_set) == 4
    described = eni_status(ecs, eni)
    assert described.tags.tag[0].tag_key == "creator"

    ecs.unassign_private_ip_addresses(
        ecs_models.UnassignPrivateIpAddressesRequest(region_id=REGION, network_interface_id=eni, private_ip_address=new_ips)
    )
    assert len(eni_status(ecs, eni).private_ip_sets.private_ip_set) == 2

    ecs.detach_network_interface(
        ecs_models.DetachNetworkInterfaceRequest(region_id=REGION, network_interface_id=eni, instance_id=INSTANCE)
    )
    wait_status(ecs, eni, "Available")
    ecs.delete_network_interface(ecs_models.DeleteNetworkInterfaceRequest(region_id=REGION, network_interface_id=eni))

    # The SDK must surface the emulator's error answer with its code.
    try:
        ecs.describe_network_interface_attribute(
            ecs_models.DescribeNetworkInterfaceAttributeRequest(region_id=REGION, network_interface_id=eni)
        )
        raise AssertionError("describing a deleted ENI succeeded")
    except Exception as e:  # the SDK's ClientException
        assert getattr(e, "code", None) == "InvalidEniId.NotFound", repr(e)
        assert getattr(e, "status_code", None) == 404, repr(e)

    print(f"SDK round trip ({SIGNATURE}) OK: {eni}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
