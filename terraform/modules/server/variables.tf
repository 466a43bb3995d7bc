variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "region" {
  description = "AWS region (log configuration, ARNs)."
  type        = string
}

variable "cluster_id" {
  description = "ECS cluster to run in."
  type        = string
}

variable "cluster_arn" {
  description = "ARN of that cluster (the scheduled task)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks."
  type        = list(string)
}

variable "image" {
  description = "fleet-server image."
  type        = string
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64, as the image was built."
  type        = string
  default     = "X86_64"
}

variable "task_count" {
  description = "Tasks behind the load balancer."
  type        = number
}

variable "cpu" {
  description = "CPU units per task."
  type        = number
}

variable "memory" {
  description = "Memory per task, MiB."
  type        = number
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "operator_cidrs" {
  description = "Ranges allowed to the HTTPS listener."
  type        = list(string)
}

variable "public_url" {
  description = "URL devices and operators use."
  type        = string
}

variable "mqtt_url" {
  description = "Broker URL the server connects to inside the VPC."
  type        = string
}

variable "device_mqtt_url" {
  description = "Broker URL told to devices at enrollment."
  type        = string
}

variable "mqtt_password_arn" {
  description = "Secret with the server's broker password."
  type        = string
}

variable "database_url_arn" {
  description = "Secret with the PostgreSQL URL."
  type        = string
}

variable "artifact_bucket" {
  description = "Artifact bucket name."
  type        = string
}

variable "artifact_bucket_arn" {
  description = "Artifact bucket ARN."
  type        = string
}

variable "artifact_kms_key_arn" {
  description = "KMS key of the artifact bucket."
  type        = string
}

variable "config_file_system_id" {
  description = "EFS file system shared with the broker."
  type        = string
}

variable "config_access_point" {
  description = "Access point of the broker configuration."
  type        = string
}

variable "log_retention_days" {
  description = "CloudWatch log retention."
  type        = number
}
