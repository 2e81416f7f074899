"""The policy calculation, cut the way Calico felix cuts its calculation graph (felix/calc).

    datastore resource ──feed──► PolicyCalculator (vpcnet.dataplane.policy_calc: the composition)
                                   │
            labelindex ◄───────────┤ namespaces, pods, network sets: endpoint labels, computed once
                 │                 │
            ipsets ◄── rulescan ◄──┤ activerules: which policies select a local endpoint (active), their
                                   │ chains, and the sets their rules use, each kept up to date
            resolver ◄─────────────┘ endpoint → ordered tiers of policies → EndpointSpec

* `labelindex.LabelIndex`: the cluster's labelled things and the namespace each selector pins.
* `rulescan.scan_policy`: a policy's rules in data plane terms plus the sets they need (pure).
* `ipsets.IpSetCalculator`: members of every set some active rule uses, updated per pod change.
* `activerules.ActiveRules`: policy → the local endpoints it selects, per direction; active policies.
* `resolver.EndpointResolver`: the tiers, the tier order and each local endpoint's spec.
* `feed`: the one dispatch from a datastore resource (or its deletion) to the calculation.

Why under vpcnet.dataplane and not vpcnet.policy: it is pure, but what it computes is the data plane's
desired state (PolicyChainSpec, IpSetSpec, kernel set names from vpcnet.dataplane.names), and
vpcnet.policy sits below the data plane, so it could not name those. What is not data plane specific
(the rule model, selectors, the endpoint-label rule in vpcnet.policy.labels) stays in vpcnet.policy.
"""
