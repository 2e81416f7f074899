"""The lab's EC2 identity: the credentials the agents, the CLI and the tests sign with and the endpoint checks
(ec2/auth.py). Its own module, free of botocore, so that `lab up` can hand it to the agents without importing
the signer (a tenth of a second or more of the CLI's start-up on a loaded machine)."""

from __future__ import annotations

# Not a secret: the lab's own account, so that requests are signed as against EC2 and checked for real.
LAB_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAVPCNETLAB0000000", "AWS_SECRET_ACCESS_KEY": "vpcnet-lab-secret"}
