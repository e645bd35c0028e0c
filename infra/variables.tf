variable "region" {
  description = "AWS region of the bucket and the EKS cluster. Common Crawl lives in us-east-1: reading it from there costs no transfer and is fastest."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "Name of the output bucket (globally unique)."
  type        = string
}

variable "output_prefix" {
  description = "Key prefix under which runs write (each run's `output` is s3://<bucket>/<output_prefix><run>). The Ray role may read and write only here."
  type        = string
  default     = "runs/"

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9._/-]*/$", var.output_prefix))
    error_message = "output_prefix must be a non-empty key prefix that ends with '/' and does not start with one."
  }
}

variable "code_prefix" {
  description = "Key prefix of the code zips that RayJobs name in runtime_env.working_dir; the Ray role may only read it."
  type        = string
  default     = "code/"

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9._/-]*/$", var.code_prefix))
    error_message = "code_prefix must be a non-empty key prefix that ends with '/' and does not start with one."
  }
}

variable "intermediate_prefixes" {
  description = "Literal key prefixes of intermediate data to expire, e.g. [\"runs/forge-v1/_tmp/\"]. S3 lifecycle filters match literal prefixes only (no wildcards), so name each run's scratch folders here, or tag the objects (see intermediate_tag)."
  type        = list(string)
  default     = []
}

variable "intermediate_tag" {
  description = "Object tag (key and value) that marks intermediate data for expiry wherever it lives in the bucket."
  type        = object({ key = string, value = string })
  default     = { key = "raypipe-tier", value = "intermediate" }
}

variable "intermediate_expiration_days" {
  description = "Days after which intermediate objects are expired (longer than a run plus the time to resume one)."
  type        = number
  default     = 14
}

variable "noncurrent_version_expiration_days" {
  description = "Days a replaced or deleted object version is kept (versioning is the undo of an overwrite)."
  type        = number
  default     = 7
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which parts of an interrupted multipart upload are removed."
  type        = number
  default     = 2
}

variable "eks_cluster_name" {
  description = "EKS cluster whose OIDC provider the Ray service account federates through (IRSA). The provider must already exist (eksctl utils associate-iam-oidc-provider)."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the Ray pods (k8s/overlays/prod)."
  type        = string
  default     = "raypipe"
}

variable "service_account" {
  description = "Kubernetes service account of the Ray pods (k8s/base/serviceaccount.yaml)."
  type        = string
  default     = "raypipe-ray"
}

variable "role_name" {
  description = "Name of the IAM role assumed by the Ray service account."
  type        = string
  default     = "raypipe-ray"
}

variable "create_node_groups" {
  description = "Also create managed node groups for the Ray CPU and GPU workers (a sketch: most clusters bring their own, or use Karpenter)."
  type        = bool
  default     = false
}

variable "node_subnet_ids" {
  description = "Private subnets for the node groups (only with create_node_groups)."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group; size the cpu-workers pods to fit one node (docs/deploy.md)."
  type        = list(string)
  default     = ["m7i.4xlarge"]
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (one GPU each, matching the gpu-workers pods)."
  type        = list(string)
  default     = ["g5.2xlarge"]
}

variable "cpu_max_nodes" {
  description = "Upper bound of the CPU node group (match the cpu-workers maxReplicas)."
  type        = number
  default     = 32
}

variable "gpu_max_nodes" {
  description = "Upper bound of the GPU node group (match the gpu-workers maxReplicas)."
  type        = number
  default     = 8
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = { project = "raypipe" }
}
