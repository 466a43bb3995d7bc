variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's address range."
  type        = string
}

variable "az_count" {
  description = "Zones to create subnets in."
  type        = number
}
