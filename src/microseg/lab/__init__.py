"""The network-namespace lab: a small estate of real hosts on one machine, for demos and end-to-end tests.

    topology.yaml --topology--> hosts, services, flows --runner.up--> namespaces + bridge (network)
                                                                 --> cgroups, server, services,
                                                                     agents, traffic (processes)
                                                                 --> inventory + policy (control)
                                                     state.json <-- LabState (state) --> status, down

`runner` is the one place that wires the pieces; `state.LabState` is what tests act through
(`exec`, `reach`, `connect`, `accepted`). Every name the lab makes starts with its prefix
(`ms-lab` by default), so `down` removes exactly what a lab made, also after a crash.
"""
