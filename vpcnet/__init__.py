"""vpcnet: Kubernetes pod networking for AWS VPCs."""

__version__ = "0.1.0"
