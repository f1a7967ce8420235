# The seed article's VPC module, with built-in resources only: terraform_data stands in for the
# AWS VPC and subnets, so the tests need no provider download and no cloud.
variable "cluster_name" {
  type = string
}

variable "vpc_cidr" {
  type = string
}

resource "terraform_data" "vpc" {
  input = {
    name = "${var.cluster_name}-vpc"
    cidr = var.vpc_cidr
  }
}

resource "terraform_data" "subnets" {
  input = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, i)]
}

output "vpc_name" {
  value = terraform_data.vpc.output.name
}

output "private_subnets" {
  value = terraform_data.subnets.output
}

output "workspace" {
  value = terraform.workspace
}
