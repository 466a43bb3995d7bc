output "bucket_name" {
  description = "The artifact bucket."
  value       = aws_s3_bucket.artifacts.bucket
}

output "bucket_arn" {
  description = "The artifact bucket's ARN."
  value       = aws_s3_bucket.artifacts.arn
}

output "kms_key_arn" {
  description = "The key encrypting the artifacts."
  value       = aws_kms_key.artifacts.arn
}
