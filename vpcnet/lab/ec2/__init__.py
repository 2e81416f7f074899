"""The lab's EC2-compatible endpoint.

- `state.Cloud`: the whole emulated EC2 state and every rule EC2 enforces on it; thread-safe, persisted
  atomically to JSON after each change and reloaded on start; all-or-nothing actions (`errors.Ec2Error`).
  Lab-side API: create_vpc, create_security_group, create_subnet, launch_instance, terminate_instance; lookups
  vpc/subnet/instance/eni/security_group, vpcs/subnets/instances/enis, enis_of, instance_by_address,
  available_ip_count, snapshot. EC2 actions: create/attach/detach/delete_network_interface,
  assign/unassign_private_ip_addresses, assign/unassign_ipv6_addresses (addresses and /80 prefixes),
  modify_network_interface_attribute, create/delete_tags.
  `Cloud` is a facade over `engine` (one part per concern: tables, store (persistence and transactions),
  tagging, security_groups, addresses, enis, topology); the parts' docstrings say where IPv6, security-group
  rules and trunk ENIs land.
- `model`: the records; `addressing`, `allocator`: subnet address arithmetic and per-action allocation.
- `hooks.FabricHooks`: what the namespace fabric implements; called under the lock before an action answers.
- `wire`, `api`, `actions`: the EC2 Query protocol (botocore's own EC2 model drives parsing and XML answers),
  the entry (`api.ACTIONS`, `api.Ec2Api.call`) and the actions' handlers grouped by area (instances and
  subnets, ENIs, addresses, tags, security groups) with answer rendering in `actions.answers`.
- `faults.Faults`: latency per action, token-bucket throttling per action class, injected failures.
- `server.Ec2Service`: the HTTP app (EC2 at POST /, lab paths /lab/state, /lab/faults, /healthz); serves on a
  caller-bound socket (`make_server(sock)`, `serve_socket(sock)`) or on 127.0.0.1 (`start_local()`).
- `local.LocalCloud`: endpoint + IMDS on 127.0.0.1 for client tests without root.
"""
