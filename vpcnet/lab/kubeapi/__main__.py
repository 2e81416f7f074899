"""`python -m vpcnet.lab.kubeapi --etcd http://127.0.0.1:2379 --listen 127.0.0.1:6443`."""

import sys

from vpcnet.lab.kubeapi.server import main

sys.exit(main())
