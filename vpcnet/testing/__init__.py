"""Test and benchmark support: never imported by the agent, the CNI or the CLI.

Kept in the package (not under tests/) because the benchmarks in bench/ use it as much as the tests do. It
sits above every other package in the import order (it may import the lab: the simulated cloud runs the
lab's EC2 engine), and nothing in vpcnet imports it.

- `simulated_ec2.SimulatedEc2`: an `Ec2Api` that runs the lab's EC2 state engine in-process, on the
  asyncio clock (so on virtual time too), with latency per API, EC2-style throttling and injected
  failures.
- `virtual_time.run_virtual`: an event loop whose clock jumps to the next timer: hours replay in seconds.
- `memalloc.MemoryAllocator`: a fixed-pool `Allocator` for the CNI's tests and its latency benchmark.
"""
