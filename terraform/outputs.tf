output "api_url" {
  description = "The operator API, TUF repository and artifact downloads (fleetctl login --server)."
  value       = "https://${var.api_domain}"
}

output "api_load_balancer_dns" {
  description = "Point api_domain at this name (CNAME or alias)."
  value       = module.server.load_balancer_dns
}

output "mqtt_url" {
  description = "The broker devices connect to (set as mqtt.device_url, told to devices at enrollment)."
  value       = "mqtts://${var.mqtt_domain}:8883"
}

output "mqtt_load_balancer_dns" {
  description = "Point mqtt_domain at this name (CNAME or alias)."
  value       = module.broker.load_balancer_dns
}

output "artifact_bucket" {
  description = "S3 bucket holding model artifacts."
  value       = module.artifacts.bucket_name
}

output "database_endpoint" {
  description = "PostgreSQL endpoint (private subnets only)."
  value       = module.database.endpoint
}

output "database_url_secret_arn" {
  description = "Secrets Manager secret holding the server's database URL."
  value       = module.database.url_secret_arn
}

output "mqtt_password_secret_arn" {
  description = "Secrets Manager secret holding the server's broker password."
  value       = aws_secretsmanager_secret.mqtt_password.arn
}

output "ecs_cluster" {
  description = "ECS cluster running fleet-server and the broker (for `aws ecs execute-command`)."
  value       = aws_ecs_cluster.this.name
}
