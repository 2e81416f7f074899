"""The lab's EC2-compatible endpoint: emulated state (`state.Cloud`), the EC2 Query API over HTTP
(`server.Ec2Service`), fault injection (`faults.Faults`) and the hooks the namespace fabric implements."""
