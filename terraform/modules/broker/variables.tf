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

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's range, let in to port 1883 (server, health checks)."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the network load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the broker task."
  type        = list(string)
}

variable "image" {
  description = "Mosquitto image."
  type        = string
}

variable "reloader_image" {
  description = "Image with a POSIX shell, stat and pkill for the reload sidecar."
  type        = string
  default     = "public.ecr.aws/docker/library/busybox:1.36"
}

variable "certificate_arn" {
  description = "ACM certificate the load balancer presents."
  type        = string
}

variable "device_cidrs" {
  description = "Ranges devices connect from."
  type        = list(string)
}

variable "config_file_system_id" {
  description = "EFS file system with the broker configuration."
  type        = string
}

variable "config_access_point" {
  description = "EFS access point of the broker configuration."
  type        = string
}

variable "log_retention_days" {
  description = "CloudWatch log retention."
  type        = number
}
