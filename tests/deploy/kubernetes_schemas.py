#!/usr/bin/env python3
# Copyright 2026 The gpu-sidecar Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Validates the Kubernetes manifests of deploy/kubernetes/ against the schemas of the tools
that take them, offline:

    python3 tests/deploy/kubernetes_schemas.py OPERATOR_API_JAR deploy/kubernetes/*.yaml

- Kubernetes' own types (ConfigMap, and the TaskManager's pod template, as a Pod): the
  schemas the `kubernetes-validate` package (PyPI) bundles, strict (an unknown field is an
  error), for Kubernetes 1.30 (native sidecar containers are on by default from 1.29) and
  the newest it knows.
- FlinkDeployment: the CRD in the Flink Kubernetes Operator's API jar
  (org.apache.flink:flink-kubernetes-operator-api, from Maven Central), strict as
  `kubectl --validate=strict` is (a field the schema does not name is an error).
- Kinds without a schema here (the Prometheus Operator's PodMonitor) are listed as such.

Prints one line per document and exits non-zero on the first that fails.
"""

import re
import sys
import zipfile

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def strict(schema):
    """Closes every object schema that names its properties, as the API server's strict
    field validation treats fields it would prune."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def crd_schema(jar, kind, api_version):
    group, version = api_version.split("/")
    plural = kind.lower() + "s"
    with zipfile.ZipFile(jar) as archive:
        name = f"META-INF/fabric8/{plural}.{group}-v1.yml"
        crd = yaml.safe_load(archive.read(name))
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return served["schema"]["openAPIV3Schema"], f"{jar.rsplit('/', 1)[-1]}:{name}"
    raise SystemExit(f"{name} has no version {version}")


def check_flink_deployment(document, jar):
    schema, source = crd_schema(jar, document["kind"], document["apiVersion"])
    # What every object has, which a CRD's schema leaves to the API server.
    schema["properties"].update(
        apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"}
    )
    schema = strict(schema)
    note = ""
    versions = schema["properties"]["spec"]["properties"]["flinkVersion"]
    wanted = document["spec"].get("flinkVersion")
    if wanted not in versions.get("enum", [wanted]) and re.fullmatch(r"v2_\d+", str(wanted)):
        # This operator release predates Flink 2: its list of Flink versions ends before the
        # one asked for, which a newer operator's lists (the manifest says which).
        note = f"; flinkVersion {wanted} is past this CRD's list (it ends at {versions['enum'][-1]}), not checked"
        del versions["enum"]
    jsonschema.validate(document, schema)
    pod = document["spec"]["taskManager"]["podTemplate"]
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    return f"valid against {source}{note}; its TaskManager pod template a valid Pod of Kubernetes {', '.join(KUBERNETES_VERSIONS)}"


def main():
    jar, files = sys.argv[1], sys.argv[2:]
    for path in files:
        with open(path) as f:
            for document in yaml.safe_load_all(f):
                if document is None:
                    continue
                kind = document["kind"]
                where = f"{path}: {kind} {document['metadata']['name']}"
                try:
                    if kind == "FlinkDeployment":
                        said = check_flink_deployment(document, jar)
                    elif document["apiVersion"] in ("v1", "apps/v1", "batch/v1"):
                        for version in KUBERNETES_VERSIONS:
                            kubernetes_validate.validate(document, version, strict=True)
                        said = f"valid for Kubernetes {', '.join(KUBERNETES_VERSIONS)}"
                    else:
                        said = f"no schema here for {document['apiVersion']}; not checked"
                except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as e:
                    path_in = "/".join(str(p) for p in getattr(e, "absolute_path", getattr(e, "path", [])))
                    raise SystemExit(f"{where}: INVALID at {path_in or '(top)'}: {e.message}")
                print(f"{where}: {said}")
    print("kubernetes schemas: all valid")


if __name__ == "__main__":
    main()
