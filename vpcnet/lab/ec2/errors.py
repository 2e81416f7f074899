"""EC2 errors as the API reports them: a code from EC2's own list, a message, an HTTP status."""

from __future__ import annotations


class Ec2Error(Exception):
    """An error the endpoint answers with, in EC2's error format. Client errors are HTTP 400."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def not_found(kind: str, ident: str) -> Ec2Error:
    """The .NotFound error for an unknown ID, with EC2's code and wording."""
    codes = {
        "vpc": ("InvalidVpcID.NotFound", "The vpc ID '{}' does not exist"),
        "subnet": ("InvalidSubnetID.NotFound", "The subnet ID '{}' does not exist"),
        "instance": ("InvalidInstanceID.NotFound", "The instance ID '{}' does not exist"),
        "eni": ("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '{}' does not exist"),
        "sg": ("InvalidGroup.NotFound", "The security group '{}' does not exist"),
        "attachment": ("InvalidAttachmentID.NotFound", "The attachment ID '{}' does not exist"),
    }
    code, message = codes[kind]
    return Ec2Error(code, message.format(ident))


def invalid_value(message: str) -> Ec2Error:
    return Ec2Error("InvalidParameterValue", message)


def internal_error(message: str) -> Ec2Error:
    return Ec2Error("InternalError", message, status=500)
