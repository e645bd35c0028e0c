output "bucket_name" {
  description = "The output bucket."
  value       = aws_s3_bucket.output.id
}

output "output_uri" {
  description = "Prefix under which runs write: pass s3://.../<run> as `--set output=`."
  value       = "s3://${aws_s3_bucket.output.id}/${var.output_prefix}"
}

output "code_uri" {
  description = "Prefix for the code zips named in runtime_env.working_dir."
  value       = "s3://${aws_s3_bucket.output.id}/${var.code_prefix}"
}

output "ray_role_arn" {
  description = "Role ARN for the eks.amazonaws.com/role-arn annotation of the Ray service account."
  value       = aws_iam_role.ray.arn
}

output "kms_key_arn" {
  description = "KMS key that encrypts the bucket."
  value       = aws_kms_key.output.arn
}
