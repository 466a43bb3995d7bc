# PostgreSQL on RDS, reachable only from fleet-server's tasks. The server gets one secret: the
# whole connection URL (TLS required), which it reads as EDGEFLEET_SERVER__DATABASE__URL.

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "database" {
  name        = "${var.name}-database"
  description = "PostgreSQL from fleet-server tasks"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_server" {
  security_group_id            = aws_security_group.database.id
  referenced_security_group_id = var.client_security_id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-postgres16"
  family = "postgres16"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "random_password" "database" {
  length  = 40
  special = false
}

resource "aws_db_instance" "this" {
  identifier                   = var.name
  engine                       = "postgres"
  engine_version               = "16"
  instance_class               = var.instance_class
  allocated_storage            = var.allocated_storage
  max_allocated_storage        = var.allocated_storage * 10
  storage_type                 = "gp3"
  storage_encrypted            = true
  multi_az                     = var.multi_az
  db_name                      = "edgefleet"
  username                     = "edgefleet"
  password                     = random_password.database.result
  db_subnet_group_name         = aws_db_subnet_group.this.name
  vpc_security_group_ids       = [aws_security_group.database.id]
  parameter_group_name         = aws_db_parameter_group.this.name
  backup_retention_period      = 14
  deletion_protection          = true
  skip_final_snapshot          = false
  final_snapshot_identifier    = "${var.name}-final"
  auto_minor_version_upgrade   = true
  performance_insights_enabled = true
  copy_tags_to_snapshot        = true
}

resource "aws_secretsmanager_secret" "url" {
  name                    = "${var.name}/database-url"
  description             = "fleet-server's PostgreSQL URL"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "url" {
  secret_id     = aws_secretsmanager_secret.url.id
  secret_string = "postgres://edgefleet:${random_password.database.result}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/edgefleet?sslmode=require"
}
