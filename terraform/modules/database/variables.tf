variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per zone."
  type        = list(string)
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "allocated_storage" {
  description = "Initial storage, GiB."
  type        = number
}

variable "multi_az" {
  description = "Keep a standby in a second zone."
  type        = bool
}

variable "client_security_id" {
  description = "Security group of the tasks allowed to connect."
  type        = string
}
