#!/usr/bin/env python3
"""Renders a deploy/ overlay (kubectl kustomize) and prints, as JSON, what each workload's
containers would run: command, args, environment (ConfigMap references resolved, Secret
references named) and mounts (with the Secret, volume claim or scratch directory behind each).
The manifest drift test (registry-service/tests/it/deploy_manifests.rs) starts the real
binaries from this, so a renamed flag or variable in either place fails CI.

usage: manifest_containers.py OVERLAY_DIR
"""
import json
import subprocess
import sys

import yaml


def main(overlay):
    rendered = subprocess.run(["kubectl", "kustomize", overlay], check=True, capture_output=True, text=True).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    workloads = []
    for o in objects:
        if o["kind"] not in ("Deployment", "Job"):
            continue
        pod = o["spec"]["template"]["spec"]
        volumes = {v["name"]: volume_source(v) for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            env = []
            for ref in c.get("envFrom", []):
                name = ref["configMapRef"]["name"]
                if name not in config_maps:
                    sys.exit(f"{o['metadata']['name']}: envFrom names ConfigMap {name}, which the overlay does not render")
                env += [{"name": k, "value": str(v)} for k, v in sorted(config_maps[name].items())]
            for e in c.get("env", []):
                if "value" in e:
                    env.append({"name": e["name"], "value": str(e["value"])})
                elif "secretKeyRef" in e.get("valueFrom", {}):
                    ref = e["valueFrom"]["secretKeyRef"]
                    env.append({"name": e["name"], "secret": ref["name"], "key": ref["key"]})
                else:
                    sys.exit(f"{o['metadata']['name']}: unsupported env source for {e['name']}")
            mounts = []
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    sys.exit(f"{o['metadata']['name']}: mount {m['name']} has no volume")
                mounts.append({"path": m["mountPath"], **volumes[m["name"]]})
            workloads.append({
                "workload": o["metadata"]["name"],
                "kind": o["kind"],
                "container": c["name"],
                "image": c.get("image", ""),
                "command": c.get("command", []),
                "args": c.get("args", []),
                "env": env,
                "mounts": mounts,
            })
    json.dump(workloads, sys.stdout, indent=1)


def volume_source(v):
    if "secret" in v:
        items = {i["key"]: i["path"] for i in v["secret"].get("items", [])}
        return {"secret": v["secret"]["secretName"], "items": items}
    if "persistentVolumeClaim" in v:
        return {"claim": v["persistentVolumeClaim"]["claimName"]}
    if "emptyDir" in v:
        return {"scratch": True}
    if "configMap" in v:
        return {"config_map": v["configMap"]["name"]}
    sys.exit(f"unsupported volume {v['name']}")


if __name__ == "__main__":
    main(sys.argv[1])
