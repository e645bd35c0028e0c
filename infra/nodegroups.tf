# A sketch of node groups for the Ray workers, off by default (create_node_groups): most
# clusters already have their own node groups or Karpenter. Both groups scale from zero; the
# Ray autoscaler asks for pods, and the cluster autoscaler (or Karpenter) adds nodes for them.
#
# GPU nodes carry the taint nvidia.com/gpu=true:NoSchedule, which the gpu-workers pods
# tolerate (k8s/base); the NVIDIA device plugin must run on them (the EKS NVIDIA AMI has the
# driver; install the plugin with its Helm chart).

locals {
  node_policies = [
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
  ]
  gpu_taint = { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }
  # What the cluster autoscaler cannot see on a group with zero nodes: its GPUs and its taint.
  gpu_scale_from_zero_tags = {
    "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu" = "1"
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"     = "true:NoSchedule"
    "k8s.io/cluster-autoscaler/node-template/label/raypipe.io/pool"    = "gpu"
  }
}

data "aws_iam_policy_document" "nodes_trust" {
  count = var.create_node_groups ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "nodes" {
  count = var.create_node_groups ? 1 : 0

  name               = "${var.role_name}-nodes"
  assume_role_policy = data.aws_iam_policy_document.nodes_trust[0].json
}

resource "aws_iam_role_policy_attachment" "nodes" {
  for_each = var.create_node_groups ? toset(local.node_policies) : toset([])

  role       = aws_iam_role.nodes[0].name
  policy_arn = each.value
}

resource "aws_eks_node_group" "cpu" {
  count = var.create_node_groups ? 1 : 0

  cluster_name    = var.eks_cluster_name
  node_group_name = "raypipe-cpu"
  node_role_arn   = aws_iam_role.nodes[0].arn
  subnet_ids      = var.node_subnet_ids
  instance_types  = var.cpu_instance_types
  labels          = { "raypipe.io/pool" = "cpu" }

  scaling_config {
    desired_size = 0
    min_size     = 0
    max_size     = var.cpu_max_nodes
  }

  # The autoscaler owns the size once the group exists.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.nodes]
}

resource "aws_eks_node_group" "gpu" {
  count = var.create_node_groups ? 1 : 0

  cluster_name    = var.eks_cluster_name
  node_group_name = "raypipe-gpu"
  node_role_arn   = aws_iam_role.nodes[0].arn
  subnet_ids      = var.node_subnet_ids
  instance_types  = var.gpu_instance_types
  ami_type        = "AL2023_x86_64_NVIDIA"
  labels          = { "raypipe.io/pool" = "gpu" }

  taint {
    key    = local.gpu_taint.key
    value  = local.gpu_taint.value
    effect = local.gpu_taint.effect
  }

  scaling_config {
    desired_size = 0
    min_size     = 0
    max_size     = var.gpu_max_nodes
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.nodes]
}

resource "aws_autoscaling_group_tag" "gpu_scale_from_zero" {
  for_each = var.create_node_groups ? local.gpu_scale_from_zero_tags : {}

  autoscaling_group_name = aws_eks_node_group.gpu[0].resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}
