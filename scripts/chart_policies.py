"""Checks the operator chart's disruption and network policies in `helm template` output,
as the JSON objects `kubectl create --dry-run=client -o json` makes of it (stdin, one after
another, or one List): a PodDisruptionBudget keeping one of REPLICAS up (none with one replica, where it would
block node drains), and a NetworkPolicy letting in only the health and metrics port, both
selecting exactly the operator's pods."""

import sys

import json

replicas = int(sys.argv[1])
def objects(text):
    """Every object of a stream of JSON values, Lists unpacked."""
    decoder, at, out = json.JSONDecoder(), 0, []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return out
        value, at = decoder.raw_decode(text, at)
        out.extend(value["items"] if value.get("kind") == "List" else [value])


docs = objects(sys.stdin.read())
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
deployment = by_kind["Deployment"][0]
pods = deployment["spec"]["selector"]["matchLabels"]
port_names = {
    p["name"]: p["containerPort"]
    for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
}

pdbs = by_kind.get("PodDisruptionBudget", [])
if replicas < 2:
    assert not pdbs, "a PDB with one replica would block every drain"
else:
    (pdb,) = pdbs
    assert pdb["spec"]["minAvailable"] == 1, pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == pods, pdb["spec"]["selector"]

(policy,) = by_kind["NetworkPolicy"]
spec = policy["spec"]
assert spec["podSelector"]["matchLabels"] == pods, spec["podSelector"]
assert spec["policyTypes"] == ["Ingress"], spec["policyTypes"]
ports = [p for rule in spec["ingress"] for p in rule["ports"]]
assert [port_names.get(p["port"], p["port"]) for p in ports] == [8090], ports
print(f"replicas {replicas}: PDB {'none' if replicas < 2 else 'minAvailable 1'}, "
      "NetworkPolicy in: port 8090 only")
