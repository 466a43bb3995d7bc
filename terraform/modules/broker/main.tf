# Mosquitto on ECS Fargate. Devices reach it through a network load balancer that terminates TLS
# (8883) with the ACM certificate; fleet-server reaches it inside the VPC by name
# (mqtt.<name>.internal:1883). One task: Mosquitto does not cluster; ECS replaces a failed task and
# devices reconnect and resume (their outboxes keep events until acknowledged). Users and ACLs come
# from the server through the shared file system, and a sidecar sends Mosquitto SIGHUP when they
# change.

resource "aws_security_group" "broker" {
  name        = "${var.name}-broker"
  description = "MQTT from the load balancer and the VPC"
  vpc_id      = var.vpc_id
}

# A network load balancer keeps no security group here: tasks see the device addresses, so the
# device ranges and the VPC (the server, the load balancer's health checks) are let in.
resource "aws_vpc_security_group_ingress_rule" "mqtt_from_devices" {
  for_each          = toset(concat(var.device_cidrs, [var.vpc_cidr]))
  security_group_id = aws_security_group.broker.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 1883
  to_port           = 1883
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.broker.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

resource "aws_lb" "mqtt" {
  name                             = "${var.name}-mqtt"
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = var.public_subnet_ids
  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "mqtt" {
  name        = "${var.name}-mqtt"
  port        = 1883
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  # Long-lived device connections: give them time to move off a task being replaced.
  deregistration_delay = 60

  health_check {
    protocol            = "TCP"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "mqtts" {
  load_balancer_arn = aws_lb.mqtt.arn
  port              = 8883
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.mqtt.arn
  }
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name = "${var.name}.internal"
  vpc  = var.vpc_id
}

resource "aws_service_discovery_service" "mqtt" {
  name = "mqtt"

  dns_config {
    namespace_id = aws_service_discovery_private_dns_namespace.this.id

    dns_records {
      type = "A"
      ttl  = 10
    }
  }
}

resource "aws_cloudwatch_log_group" "broker" {
  name              = "/edgefleet/${var.name}/broker"
  retention_in_days = var.log_retention_days
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

resource "aws_iam_role" "execution" {
  name               = "${var.name}-broker-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-broker-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "ReadBrokerConfig"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = ["arn:aws:elasticfilesystem:${var.region}:*:file-system/${var.config_file_system_id}"]

    condition {
      test     = "StringEquals"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [for ap in [var.config_access_point, aws_efs_access_point.data.id] : "arn:aws:elasticfilesystem:${var.region}:*:access-point/${ap}"]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "efs"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# Mosquitto's persistence (retained desired states, the server's queued session) outlives the task.
resource "aws_efs_access_point" "data" {
  file_system_id = var.config_file_system_id

  posix_user {
    uid = 1883
    gid = 1883
  }

  root_directory {
    path = "/mosquitto-data"

    creation_info {
      owner_uid   = 1883
      owner_gid   = 1883
      permissions = "0700"
    }
  }
}

locals {
  mosquitto_conf = join("\n", [
    "listener 1883",
    "persistence true",
    "persistence_location /mosquitto/data/",
    "autosave_interval 30",
    "log_dest stdout",
    "include_dir /etc/edgefleet/broker",
  ])
}

resource "aws_ecs_task_definition" "broker" {
  family                   = "${var.name}-broker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024
  memory                   = 2048
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  # The reloader signals Mosquitto, so the containers share a PID namespace.
  pid_mode = "task"

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "ARM64"
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
    name = "mosquitto-data"

    efs_volume_configuration {
      file_system_id     = var.config_file_system_id
      transit_encryption = "ENABLED"

      authorization_config {
        access_point_id = aws_efs_access_point.data.id
        iam             = "ENABLED"
      }
    }
  }

  container_definitions = jsonencode([
    {
      name      = "mosquitto"
      image     = var.image
      essential = true
      # Waits for the server's first mosquitto-config run, then starts with its files.
      entryPoint = ["/bin/sh", "-c"]
      command = [
        "until [ -f /etc/edgefleet/broker/edgefleet.conf ]; do sleep 5; done; printf '%s\\n' \"$MOSQUITTO_CONF\" > /tmp/mosquitto.conf && exec mosquitto -c /tmp/mosquitto.conf"
      ]
      environment  = [{ name = "MOSQUITTO_CONF", value = local.mosquitto_conf }]
      portMappings = [{ containerPort = 1883, protocol = "tcp" }]
      mountPoints = [
        { sourceVolume = "broker-config", containerPath = "/etc/edgefleet/broker", readOnly = true },
        { sourceVolume = "mosquitto-data", containerPath = "/mosquitto/data", readOnly = false },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.broker.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "mosquitto"
        }
      }
    },
    {
      name      = "reloader"
      image     = var.reloader_image
      essential = false
      command = [
        "sh", "-c",
        "last=; while sleep 10; do now=$(stat -c %Y /etc/edgefleet/broker/passwd 2>/dev/null); if [ -n \"$last\" ] && [ \"$now\" != \"$last\" ]; then pkill -HUP -x mosquitto; fi; last=$now; done"
      ]
      mountPoints = [
        { sourceVolume = "broker-config", containerPath = "/etc/edgefleet/broker", readOnly = true },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.broker.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "reloader"
        }
      }
    },
  ])
}

resource "aws_ecs_service" "broker" {
  name            = "${var.name}-broker"
  cluster         = var.cluster_id
  task_definition = aws_ecs_task_definition.broker.arn
  desired_count   = 1
  launch_type     = "FARGATE"
  # Never two brokers at once: devices would split between them.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.broker.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.mqtt.arn
    container_name   = "mosquitto"
    container_port   = 1883
  }

  service_registries {
    registry_arn = aws_service_discovery_service.mqtt.arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_lb_listener.mqtts]
}
