# The output bucket: encrypted with a customer-managed KMS key, versioned, never public, and
# with lifecycle rules that remove what a run leaves behind but never its deliverables.

resource "aws_kms_key" "output" {
  description             = "raypipe output bucket ${var.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
}

resource "aws_kms_alias" "output" {
  name          = "alias/${var.bucket_name}"
  target_key_id = aws_kms_key.output.key_id
}

resource "aws_s3_bucket" "output" {
  bucket = var.bucket_name
}

resource "aws_s3_bucket_ownership_controls" "output" {
  bucket = aws_s3_bucket.output.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "output" {
  bucket = aws_s3_bucket.output.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "output" {
  bucket = aws_s3_bucket.output.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "output" {
  bucket = aws_s3_bucket.output.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.output.arn
    }
    # One data key per bucket instead of one KMS call per object: Ray Data writes many objects.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "output" {
  bucket = aws_s3_bucket.output.id

  # Rules on noncurrent versions need versioning in place first.
  depends_on = [aws_s3_bucket_versioning.output]

  # Atomic writes go to <output>/_tmp/ and are then moved, which leaves a noncurrent version
  # and a delete marker behind: versioning keeps them for a few days, then they go.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  rule {
    id     = "expire-tagged-intermediates"
    status = "Enabled"

    filter {
      tag {
        key   = var.intermediate_tag.key
        value = var.intermediate_tag.value
      }
    }

    expiration {
      days = var.intermediate_expiration_days
    }
  }

  dynamic "rule" {
    for_each = toset(var.intermediate_prefixes)

    content {
      id     = "expire-intermediates-${rule.value}"
      status = "Enabled"

      filter {
        prefix = rule.value
      }

      expiration {
        days = var.intermediate_expiration_days
      }
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.output.arn,
      "${aws_s3_bucket.output.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "output" {
  bucket = aws_s3_bucket.output.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.output]
}
