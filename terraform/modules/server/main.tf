# fleet-server on ECS Fargate behind an HTTPS application load balancer. The tasks are stateless:
# state and the TUF metadata in PostgreSQL, artifacts in S3, the TUF online keys on the encrypted
# shared file system. A scheduled task refreshes Mosquitto's users and ACLs every minute.

resource "aws_security_group" "alb" {
  name        = "${var.name}-api-lb"
  description = "HTTPS from operators and devices"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  for_each          = toset(var.operator_cidrs)
  security_group_id = aws_security_group.alb.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "http_redirect" {
  for_each          = toset(var.operator_cidrs)
  security_group_id = aws_security_group.alb.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  referenced_security_group_id = aws_security_group.server.id
  ip_protocol                  = "tcp"
  from_port                    = 8800
  to_port                      = 8800
}

resource "aws_security_group" "server" {
  name        = "${var.name}-server"
  description = "fleet-server tasks"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_alb" {
  security_group_id            = aws_security_group.server.id
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = 8800
  to_port                      = 8800
}

# Out to PostgreSQL, the broker, EFS, S3 and the AWS APIs (through NAT or endpoints).
resource "aws_vpc_security_group_egress_rule" "server_all" {
  security_group_id = aws_security_group.server.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

resource "aws_lb" "api" {
  name                       = "${var.name}-api"
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  # Large artifact downloads on slow device links.
  idle_timeout = 300
}

resource "aws_lb_target_group" "api" {
  name                 = "${var.name}-api"
  port                 = 8800
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.api.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_cloudwatch_log_group" "server" {
  name              = "/edgefleet/${var.name}/server"
  retention_in_days = var.log_retention_days
}

# Online TUF keys (snapshot, timestamp), shared by every task.
resource "aws_efs_access_point" "keys" {
  file_system_id = var.config_file_system_id

  posix_user {
    uid = 65532
    gid = 65532
  }

  root_directory {
    path = "/server-keys"

    creation_info {
      owner_uid   = 65532
      owner_gid   = 65532
      permissions = "0700"
    }
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The execution role pulls the image, writes logs and reads exactly the two secrets.
resource "aws_iam_role" "execution" {
  name               = "${var.name}-server-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.mqtt_password_arn, var.database_url_arn]
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

# The task role: the artifact bucket and its key, the two access points; nothing else.
resource "aws_iam_role" "task" {
  name               = "${var.name}-server-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [var.artifact_bucket_arn]
  }

  statement {
    sid = "ReadWriteArtifacts"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      # An upload is staged under tmp/ and moved to its address once its hash checks out.
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.artifact_bucket_arn}/*"]
  }

  statement {
    sid       = "ArtifactKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.artifact_kms_key_arn]
  }

  statement {
    sid       = "SharedFiles"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = ["arn:aws:elasticfilesystem:${var.region}:*:file-system/${var.config_file_system_id}"]

    condition {
      test     = "StringEquals"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [for ap in [var.config_access_point, aws_efs_access_point.keys.id] : "arn:aws:elasticfilesystem:${var.region}:*:access-point/${ap}"]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "artifacts-and-files"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

locals {
  environment = [
    { name = "EDGEFLEET_SERVER__PUBLIC_URL", value = var.public_url },
    { name = "EDGEFLEET_SERVER__MQTT__URL", value = var.mqtt_url },
    { name = "EDGEFLEET_SERVER__MQTT__DEVICE_URL", value = var.device_mqtt_url },
    { name = "EDGEFLEET_SERVER__TUF__ONLINE_KEYS_DIR", value = "/etc/edgefleet/keys" },
    { name = "EDGEFLEET_SERVER__ARTIFACTS__URL", value = "s3://${var.artifact_bucket}/artifacts" },
  ]
  secrets = [
    { name = "EDGEFLEET_SERVER__MQTT__PASSWORD", valueFrom = var.mqtt_password_arn },
    { name = "EDGEFLEET_SERVER__DATABASE__URL", valueFrom = var.database_url_arn },
  ]
  log_configuration = {
    logDriver = "awslogs"
    options = {
      awslogs-group         = aws_cloudwatch_log_group.server.name
      awslogs-region        = var.region
      awslogs-stream-prefix = "server"
    }
  }
}

resource "aws_ecs_task_definition" "server" {
  family                   = "${var.name}-server"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "broker-config"

    efs_volume_configuration {
      file_system_id     = var.config_file_system_id
      transit_encryption = "ENABLED"

      authorization_config {
        access_point_id = var.config_access_point
        iam             = "ENABLED"
      }
    }
  }

  volume {
    name = "keys"

    efs_volume_configuration {
      file_system_id     = var.config_file_system_id
      transit_encryption = "ENABLED"

      authorization_config {
        access_point_id = aws_efs_access_point.keys.id
        iam             = "ENABLED"
      }
    }
  }

  container_definitions = jsonencode([
    {
      name                   = "fleet-server"
      image                  = var.image
      essential              = true
      readonlyRootFilesystem = false
      portMappings           = [{ containerPort = 8800, protocol = "tcp" }]
      environment            = local.environment
      secrets                = local.secrets
      mountPoints = [
        { sourceVolume = "keys", containerPath = "/etc/edgefleet/keys", readOnly = false },
        { sourceVolume = "broker-config", containerPath = "/etc/edgefleet/broker", readOnly = false },
      ]
      linuxParameters  = { capabilities = { drop = ["ALL"] } }
      logConfiguration = local.log_configuration
    },
  ])
}

resource "aws_ecs_service" "server" {
  name            = "${var.name}-server"
  cluster         = var.cluster_id
  task_definition = aws_ecs_task_definition.server.arn
  desired_count   = var.task_count
  launch_type     = "FARGATE"
  # Rolling deploys keep every task serving until its replacement is healthy.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.server.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api.arn
    container_name   = "fleet-server"
    container_port   = 8800
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_lb_listener.https]
}

# `fleet-server mosquitto-config` every minute: newly enrolled devices can connect within a
# minute; the broker's reloader applies the files.
data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-broker-config-schedule"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    actions   = ["ecs:RunTask"]
    resources = [replace(aws_ecs_task_definition.server.arn, "/:\\d+$/", ":*")]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [var.cluster_arn]
    }
  }

  statement {
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.task.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "run-broker-config"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_cloudwatch_event_rule" "broker_config" {
  name                = "${var.name}-broker-config"
  description         = "Refresh Mosquitto's users and ACLs from fleet-server's database"
  schedule_expression = "rate(1 minute)"
}

resource "aws_cloudwatch_event_target" "broker_config" {
  rule     = aws_cloudwatch_event_rule.broker_config.name
  arn      = var.cluster_arn
  role_arn = aws_iam_role.scheduler.arn

  ecs_target {
    task_definition_arn = aws_ecs_task_definition.server.arn
    launch_type         = "FARGATE"
    task_count          = 1

    network_configuration {
      subnets          = var.private_subnet_ids
      security_groups  = [aws_security_group.server.id]
      assign_public_ip = false
    }
  }

  input = jsonencode({
    containerOverrides = [
      {
        name    = "fleet-server"
        command = ["mosquitto-config", "--config", "/etc/edgefleet/server.toml", "--out-dir", "/etc/edgefleet/broker"]
      },
    ]
  })
}
