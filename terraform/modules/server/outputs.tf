output "security_group_id" {
  description = "The server tasks' security group."
  value       = aws_security_group.server.id
}

output "load_balancer_dns" {
  description = "DNS name of the API load balancer."
  value       = aws_lb.api.dns_name
}
