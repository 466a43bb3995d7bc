variable "name" {
  description = "Prefix of every resource name; one stack per name."
  type        = string
  default     = "edgefleet"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the stack."
  type        = string
  default     = "eu-central-1"
}

variable "az_count" {
  description = "Availability zones to spread subnets, server tasks and the database over."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3: the load balancers and RDS need two zones."
  }
}

variable "vpc_cidr" {
  description = "The VPC's address range; split into public and private /20s per zone."
  type        = string
  default     = "10.40.0.0/16"
}

variable "server_image" {
  description = "fleet-server image (packaging/container/Containerfile), pushed to a registry the tasks can pull from, e.g. an ECR repository URL with a tag."
  type        = string
}

variable "server_count" {
  description = "fleet-server tasks behind the load balancer. They share PostgreSQL, the S3 bucket, the broker and the online keys (docs/SERVER.md)."
  type        = number
  default     = 2

  validation {
    condition     = var.server_count >= 1
    error_message = "server_count must be at least 1."
  }
}

variable "server_cpu" {
  description = "CPU units per fleet-server task (1024 = one vCPU)."
  type        = number
  default     = 1024
}

variable "server_memory" {
  description = "Memory per fleet-server task, MiB."
  type        = number
  default     = 2048
}

variable "broker_image" {
  description = "Mosquitto image for the MQTT broker task."
  type        = string
  default     = "public.ecr.aws/docker/library/eclipse-mosquitto:2.0"
}

variable "certificate_arn" {
  description = "ACM certificate for api_domain and mqtt_domain; the load balancers terminate TLS with it."
  type        = string
}

variable "api_domain" {
  description = "Host name operators and devices use for the API and downloads (point it at the output api_load_balancer_dns)."
  type        = string
}

variable "mqtt_domain" {
  description = "Host name devices use for MQTT over TLS (point it at the output mqtt_load_balancer_dns)."
  type        = string
}

variable "operator_cidrs" {
  description = "Address ranges allowed to reach the HTTPS API (devices download from it too, so usually 0.0.0.0/0)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "device_cidrs" {
  description = "Address ranges allowed to reach the MQTT broker."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "db_instance_class" {
  description = "RDS instance class of the PostgreSQL database."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "Initial database storage, GiB (grows automatically up to 10x)."
  type        = number
  default     = 50
}

variable "db_multi_az" {
  description = "Keep a synchronous standby in a second zone."
  type        = bool
  default     = true
}

variable "artifact_noncurrent_days" {
  description = "Days an overwritten or deleted artifact version is kept before S3 expires it."
  type        = number
  default     = 30
}

variable "log_retention_days" {
  description = "CloudWatch retention of the server and broker logs."
  type        = number
  default     = 30
}
