# Edgefleet's cloud side on AWS: fleet-server tasks on ECS Fargate behind an HTTPS load balancer,
# PostgreSQL on RDS, artifacts in S3, Mosquitto on ECS behind a TLS network load balancer.
# terraform/README.md explains the choices.

module "network" {
  source   = "./modules/network"
  name     = var.name
  vpc_cidr = var.vpc_cidr
  az_count = var.az_count
}

module "artifacts" {
  source          = "./modules/artifacts"
  name            = var.name
  noncurrent_days = var.artifact_noncurrent_days
}

module "database" {
  source             = "./modules/database"
  name               = var.name
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.private_subnet_ids
  instance_class     = var.db_instance_class
  allocated_storage  = var.db_allocated_storage
  multi_az           = var.db_multi_az
  client_security_id = module.server.security_group_id
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

# Mosquitto's users and ACLs: fleet-server writes them here (`fleet-server mosquitto-config`),
# the broker reads them. Encrypted, reachable only from the two services.
resource "aws_efs_file_system" "broker_config" {
  creation_token = "${var.name}-broker-config"
  encrypted      = true

  tags = {
    Name = "${var.name}-broker-config"
  }
}

resource "aws_security_group" "broker_config" {
  name        = "${var.name}-broker-config"
  description = "NFS to the broker configuration file system"
  vpc_id      = module.network.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "broker_config_from_server" {
  security_group_id            = aws_security_group.broker_config.id
  referenced_security_group_id = module.server.security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}

resource "aws_vpc_security_group_ingress_rule" "broker_config_from_broker" {
  security_group_id            = aws_security_group.broker_config.id
  referenced_security_group_id = module.broker.security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}

resource "aws_efs_mount_target" "broker_config" {
  count           = var.az_count
  file_system_id  = aws_efs_file_system.broker_config.id
  subnet_id       = module.network.private_subnet_ids[count.index]
  security_groups = [aws_security_group.broker_config.id]
}

# Both sides see the files as the server image's user (65532), so the broker reads the 0600 files.
resource "aws_efs_access_point" "broker_config" {
  file_system_id = aws_efs_file_system.broker_config.id

  posix_user {
    uid = 65532
    gid = 65532
  }

  root_directory {
    path = "/broker"

    creation_info {
      owner_uid   = 65532
      owner_gid   = 65532
      permissions = "0700"
    }
  }
}

resource "random_password" "mqtt" {
  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "mqtt_password" {
  name                    = "${var.name}/mqtt-password"
  description             = "fleet-server's password on the MQTT broker"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "mqtt_password" {
  secret_id     = aws_secretsmanager_secret.mqtt_password.id
  secret_string = random_password.mqtt.result
}

module "broker" {
  source                = "./modules/broker"
  name                  = var.name
  region                = var.region
  cluster_id            = aws_ecs_cluster.this.id
  vpc_id                = module.network.vpc_id
  vpc_cidr              = var.vpc_cidr
  public_subnet_ids     = module.network.public_subnet_ids
  private_subnet_ids    = module.network.private_subnet_ids
  image                 = var.broker_image
  certificate_arn       = var.certificate_arn
  device_cidrs          = var.device_cidrs
  config_file_system_id = aws_efs_file_system.broker_config.id
  config_access_point   = aws_efs_access_point.broker_config.id
  log_retention_days    = var.log_retention_days
}

module "server" {
  source                = "./modules/server"
  name                  = var.name
  region                = var.region
  cluster_id            = aws_ecs_cluster.this.id
  cluster_arn           = aws_ecs_cluster.this.arn
  vpc_id                = module.network.vpc_id
  public_subnet_ids     = module.network.public_subnet_ids
  private_subnet_ids    = module.network.private_subnet_ids
  image                 = var.server_image
  task_count            = var.server_count
  cpu                   = var.server_cpu
  memory                = var.server_memory
  certificate_arn       = var.certificate_arn
  operator_cidrs        = var.operator_cidrs
  public_url            = "https://${var.api_domain}"
  mqtt_url              = "mqtt://${module.broker.internal_host}:1883"
  device_mqtt_url       = "mqtts://${var.mqtt_domain}:8883"
  mqtt_password_arn     = aws_secretsmanager_secret.mqtt_password.arn
  database_url_arn      = module.database.url_secret_arn
  artifact_bucket       = module.artifacts.bucket_name
  artifact_bucket_arn   = module.artifacts.bucket_arn
  artifact_kms_key_arn  = module.artifacts.kms_key_arn
  config_file_system_id = aws_efs_file_system.broker_config.id
  config_access_point   = aws_efs_access_point.broker_config.id
  log_retention_days    = var.log_retention_days
}
