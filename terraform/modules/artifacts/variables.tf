variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "noncurrent_days" {
  description = "Days a noncurrent object version is kept."
  type        = number
}
