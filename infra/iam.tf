# The IAM role of the Ray pods, assumed through IRSA: only the Kubernetes service account
# <namespace>/<service_account> of this EKS cluster can assume it, and it can
#   - read Common Crawl (s3://commoncrawl, read-only),
#   - read and write objects only under s3://<bucket>/<output_prefix>,
#   - read the code zips under s3://<bucket>/<code_prefix>,
#   - list the bucket only below those prefixes.
# No statement grants s3:* or writes anywhere else.

data "aws_eks_cluster" "this" {
  name = var.eks_cluster_name
}

data "aws_iam_openid_connect_provider" "eks" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

locals {
  oidc_issuer    = trimprefix(data.aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://")
  output_objects = "${aws_s3_bucket.output.arn}/${var.output_prefix}*"
  code_objects   = "${aws_s3_bucket.output.arn}/${var.code_prefix}*"
}

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "RayServiceAccountViaIRSA"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [data.aws_iam_openid_connect_provider.eks.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "ray" {
  statement {
    sid       = "ReadCommonCrawl"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::commoncrawl/*"]
  }

  statement {
    sid       = "ListCommonCrawl"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::commoncrawl"]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["crawl-data/", "crawl-data/*"]
    }
  }

  statement {
    sid       = "LocateOutputBucket"
    effect    = "Allow"
    actions   = ["s3:GetBucketLocation"]
    resources = [aws_s3_bucket.output.arn]
  }

  statement {
    sid       = "ListOutputAndCodePrefixes"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.output.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = [
        trimsuffix(var.output_prefix, "/"),
        "${var.output_prefix}*",
        trimsuffix(var.code_prefix, "/"),
        "${var.code_prefix}*",
      ]
    }
  }

  statement {
    sid    = "ReadWriteOutputPrefix"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:PutObjectTagging",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.output_objects]
  }

  statement {
    sid       = "ReadCode"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = [local.code_objects]
  }

  statement {
    sid       = "UseOutputKeyThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.output.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ray" {
  name                 = var.role_name
  description          = "raypipe Ray pods (${var.namespace}/${var.service_account}) via IRSA"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "ray" {
  name   = "raypipe-s3"
  role   = aws_iam_role.ray.id
  policy = data.aws_iam_policy_document.ray.json
}
