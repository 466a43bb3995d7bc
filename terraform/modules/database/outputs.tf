output "endpoint" {
  description = "host:port of the database."
  value       = aws_db_instance.this.endpoint
}

output "url_secret_arn" {
  description = "Secret holding the connection URL."
  value       = aws_secretsmanager_secret.url.arn
}
