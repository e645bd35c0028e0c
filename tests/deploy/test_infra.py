"""infra/ (Terraform, AWS) parses, and its bucket and IAM role keep their security invariants.

python-hcl2 parses every file (a syntax error fails here, as ``terraform validate`` would); the
policies are then read as data: plain references (``var.*``, ``local.*``, the bucket and key
ARNs) are resolved with the variables' defaults and terraform.tfvars.example, so the checks see
the ARNs the role would really hold. Names shared with k8s/ (namespace, service account, role,
bucket, prefixes, GPU taint) are checked to agree. ``terraform fmt``/``validate`` run too where
a terraform binary exists (the machine image has one; none comes from the package registries).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
READ_ACTIONS = {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:ListMultipartUploadParts"}


def parse(path: Path) -> dict[str, Any]:
    return hcl2.loads(path.read_text(), serialization_options=OPTIONS)


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    """All of infra/*.tf merged: {"resource": {type: {name: body}}, "data": ..., "variable": ..., ...}."""
    merged: dict[str, Any] = {}
    for path in sorted(INFRA.glob("*.tf")):
        for kind, entries in parse(path).items():
            for entry in entries:
                if kind in ("resource", "data"):
                    for type_, named in entry.items():
                        merged.setdefault(kind, {}).setdefault(type_, {}).update(named)
                elif kind in ("variable", "output", "locals"):
                    merged.setdefault(kind, {}).update(entry)
                else:
                    merged.setdefault(kind, []).append(entry)
    return merged


@pytest.fixture(scope="module")
def tfvars() -> dict[str, Any]:
    return hcl2.loads((INFRA / "terraform.tfvars.example").read_text(), serialization_options=OPTIONS)


@pytest.fixture(scope="module")
def resolve(tf: dict[str, Any], tfvars: dict[str, Any]):
    """Substitute plain references in a value; function calls and unknowns stay as written."""
    values = {f"var.{k}": v.get("default") for k, v in tf["variable"].items()}
    values.update({f"var.{k}": v for k, v in tfvars.items()})
    values["aws_s3_bucket.output.arn"] = f"arn:aws:s3:::{values['var.bucket_name']}"
    values["aws_kms_key.output.arn"] = "arn:aws:kms:REGION:ACCOUNT:key/OUTPUT"

    def sub(value: Any) -> Any:
        if isinstance(value, list):
            return [sub(v) for v in value]
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        for _ in range(5):
            new = re.sub(
                r"\$\{([a-z_][a-z0-9_.]*)\}",
                lambda m: str(values.get(m.group(1), m.group(0))),
                value,
            )
            if new == value:
                break
            value = new
        return value

    for name, expr in tf["locals"].items():
        values[f"local.{name}"] = expr
    for name in tf["locals"]:
        values[f"local.{name}"] = sub(values[f"local.{name}"])
    return sub


def statements(tf: dict[str, Any], name: str, resolve) -> list[dict[str, Any]]:
    return resolve(tf["data"]["aws_iam_policy_document"][name]["statement"])


def conditions(statement: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {c["variable"]: (c["test"], c["values"]) for c in statement.get("condition", [])}


# ---------------------------------------------------------------- syntax


def test_every_file_parses_and_a_broken_one_does_not(tmp_path: Path) -> None:
    files = sorted(INFRA.glob("*.tf"))
    assert {p.name for p in files} >= {"versions.tf", "variables.tf", "bucket.tf", "iam.tf", "outputs.tf"}
    for path in files:
        assert parse(path), path
    with pytest.raises(Exception):  # noqa: B017 (the parser's error type is an implementation detail)
        hcl2.loads('resource "aws_s3_bucket" "x" {\n  bucket = "a"\n', serialization_options=OPTIONS)


def test_variables_and_outputs_are_documented(tf: dict[str, Any]) -> None:
    for name, body in tf["variable"].items():
        assert body.get("description") and body.get("type"), name
    for name, body in tf["output"].items():
        assert body.get("description") and body.get("value"), name
    assert {"bucket_name", "output_uri", "code_uri", "ray_role_arn"} <= set(tf["output"])


# ---------------------------------------------------------------- bucket


def test_bucket_is_encrypted_versioned_and_private(tf: dict[str, Any]) -> None:
    resources = tf["resource"]
    (sse,) = resources["aws_s3_bucket_server_side_encryption_configuration"].values()
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] in ("aws:kms", "AES256")
    if default["sse_algorithm"] == "aws:kms":
        assert default["kms_master_key_id"] == "${aws_kms_key.output.arn}"
        assert resources["aws_kms_key"]["output"]["enable_key_rotation"] is True
    (versioning,) = resources["aws_s3_bucket_versioning"].values()
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    (block,) = resources["aws_s3_bucket_public_access_block"].values()
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[flag] is True, flag
    (ownership,) = resources["aws_s3_bucket_ownership_controls"].values()
    assert ownership["rule"][0]["object_ownership"] == "BucketOwnerEnforced"


def test_bucket_policy_denies_plain_http(tf: dict[str, Any], resolve) -> None:
    (deny,) = statements(tf, "bucket", resolve)
    assert deny["effect"] == "Deny" and conditions(deny)["aws:SecureTransport"] == ("Bool", ["false"])


def test_lifecycle_expires_intermediates_and_old_versions_but_never_deliverables(tf: dict[str, Any]) -> None:
    (lifecycle,) = tf["resource"]["aws_s3_bucket_lifecycle_configuration"].values()
    rules = {r["id"]: r for r in lifecycle["rule"]}
    noncurrent = rules["expire-noncurrent-versions"]
    assert (
        noncurrent["noncurrent_version_expiration"][0]["noncurrent_days"] == "${var.noncurrent_version_expiration_days}"
    )
    assert noncurrent["expiration"][0] == {"expired_object_delete_marker": True}
    assert "abort_incomplete_multipart_upload" in rules["abort-incomplete-multipart-uploads"]
    tagged = rules["expire-tagged-intermediates"]
    assert "tag" in tagged["filter"][0] and "days" in tagged["expiration"][0]
    (prefixed,) = [d["rule"] for d in lifecycle["dynamic"]]
    content = prefixed["content"][0]
    assert prefixed["for_each"] == "${toset(var.intermediate_prefixes)}"
    assert content["filter"][0] == {"prefix": "${rule.value}"} and "days" in content["expiration"][0]
    for rule in lifecycle["rule"]:
        if rule["filter"][0] == {}:  # whole-bucket rules must not expire current objects
            assert "days" not in rule.get("expiration", [{}])[0], rule["id"]


# ---------------------------------------------------------------- IAM


def test_trust_policy_admits_only_the_ray_service_account(tf: dict[str, Any], resolve) -> None:
    (trust,) = statements(tf, "trust", resolve)
    assert trust["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert trust["principals"][0]["type"] == "Federated"
    assert trust["principals"][0]["identifiers"] == ["${data.aws_iam_openid_connect_provider.eks.arn}"]
    found = conditions(trust)
    subject = [v for k, v in found.items() if k.endswith(":sub")]
    audience = [v for k, v in found.items() if k.endswith(":aud")]
    assert subject == [("StringEquals", ["system:serviceaccount:raypipe:raypipe-ray"])]
    assert audience == [("StringEquals", ["sts.amazonaws.com"])]


def test_role_policy_is_least_privilege(tf: dict[str, Any], resolve) -> None:
    policy = statements(tf, "ray", resolve)
    bucket_arn = "arn:aws:s3:::raypipe-forge"
    for statement in policy:
        assert statement["effect"] == "Allow"
        actions, resources = statement["actions"], statement["resources"]
        assert not [a for a in actions if a in ("*", "s3:*") or a.endswith(":*")], statement["sid"]
        assert "*" not in resources, statement["sid"]
        writes = [a for a in actions if a.startswith("s3:") and a not in READ_ACTIONS]
        if writes:
            assert resources == [f"{bucket_arn}/runs/*"], f"{statement['sid']} writes outside the output prefix"
        if "s3:ListBucket" in actions:
            test, prefixes = conditions(statement)["s3:prefix"]
            assert test == "StringLike" and prefixes and all(p not in ("", "*") for p in prefixes)
        if any(r.startswith("arn:aws:s3:::commoncrawl") for r in resources):
            assert set(actions) <= {"s3:GetObject", "s3:ListBucket"}, "Common Crawl is read-only"
            assert all(r in ("arn:aws:s3:::commoncrawl", "arn:aws:s3:::commoncrawl/*") for r in resources)
        if any(a.startswith("kms:") for a in actions):
            assert conditions(statement)["kms:ViaService"][0] == "StringEquals", "the key only through S3"
    by_sid = {s["sid"]: s for s in policy}
    assert by_sid["ReadCommonCrawl"]["resources"] == ["arn:aws:s3:::commoncrawl/*"]
    assert by_sid["ReadCode"]["actions"] == ["s3:GetObject"]
    assert by_sid["ReadCode"]["resources"] == [f"{bucket_arn}/code/*"]
    written = {a for s in policy for a in s["actions"] if a.startswith("s3:") and a not in READ_ACTIONS}
    assert {"s3:PutObject", "s3:DeleteObject"} <= written, "atomic writes move _tmp/ objects: put + delete"


# ---------------------------------------------------------------- agreement with k8s/


def test_names_agree_with_the_prod_overlay(tf: dict[str, Any], tfvars: dict[str, Any]) -> None:
    variables = {k: v.get("default") for k, v in tf["variable"].items()} | tfvars
    prod = yaml.safe_load((REPO / "k8s/overlays/prod/kustomization.yaml").read_text())
    account = yaml.safe_load((REPO / "k8s/base/serviceaccount.yaml").read_text())
    assert prod["namespace"] == variables["namespace"]
    assert account["metadata"]["name"] == variables["service_account"]
    patches = "\n".join(p.get("patch", "") for p in prod["patches"])
    assert re.search(rf"arn:aws:iam::\d{{12}}:role/{variables['role_name']}\b", patches)
    output = re.search(r"--set output=s3://([^/\s]+)/(\S+)", patches)
    assert output and output.group(1) == variables["bucket_name"]
    assert output.group(2).startswith(variables["output_prefix"]), "the role may write only under output_prefix"
    code = re.search(r"working_dir: s3://([^/\s]+)/(\S+)", patches)
    assert code and code.group(1) == variables["bucket_name"] and code.group(2).startswith(variables["code_prefix"])


def test_gpu_taint_is_what_the_gpu_workers_tolerate(tf: dict[str, Any]) -> None:
    taint = tf["locals"]["gpu_taint"]
    gpu_group = tf["resource"]["aws_eks_node_group"]["gpu"]
    assert gpu_group["taint"][0]["key"] == "${local.gpu_taint.key}"
    assert gpu_group["scaling_config"][0]["min_size"] == 0
    cluster = yaml.safe_load((REPO / "k8s/base/raycluster.yaml").read_text())
    (group,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-workers"]
    tolerations = group["template"]["spec"]["tolerations"]
    effect = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
    assert {"key": taint["key"], "operator": "Exists", "effect": effect[taint["effect"]]} in tolerations


# ---------------------------------------------------------------- terraform itself, where it exists


def test_terraform_fmt_and_validate(tmp_path: Path) -> None:
    """Real ``terraform fmt -check`` and ``validate``; the AWS provider comes from a local plugin
    mirror where the machine has one ($TF_PLUGIN_DIR, default /opt/tf-plugins), else the network."""
    tool = shutil.which("terraform") or shutil.which("tofu")
    if tool is None:
        pytest.skip("no terraform or tofu binary on PATH (not in the package registries)")
    fmt = subprocess.run([tool, "fmt", "-check", "-diff", str(INFRA)], capture_output=True, text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    work = tmp_path / "infra"
    shutil.copytree(INFRA, work)
    plugin_dir = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))
    init_args = [tool, "init", "-backend=false", "-input=false", "-no-color"]
    if plugin_dir.is_dir():
        init_args.append(f"-plugin-dir={plugin_dir}")
    init = subprocess.run(init_args, cwd=work, capture_output=True, text=True, timeout=300)
    if init.returncode != 0:
        pytest.skip(f"terraform init could not get the AWS provider (offline?): {init.stderr[-500:]}")
    done = subprocess.run([tool, "validate", "-no-color"], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The configuration is valid" in done.stdout
