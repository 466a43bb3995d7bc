output "security_group_id" {
  description = "The broker tasks' security group."
  value       = aws_security_group.broker.id
}

output "load_balancer_dns" {
  description = "DNS name of the MQTT load balancer."
  value       = aws_lb.mqtt.dns_name
}

output "internal_host" {
  description = "Name of the broker inside the VPC."
  value       = "${aws_service_discovery_service.mqtt.name}.${aws_service_discovery_private_dns_namespace.this.name}"
}
