//! The files that run a Mosquitto broker for the fleet (`fleet-server mosquitto-config`): the
//! password and ACL files that confine each device to its own topics, and the settings that
//! bind client ids to users and bound every message and queue.

use edgefleet_protocol::DeviceId;
use edgefleet_protocol::topic::TOPIC_PREFIX;

use crate::broker::MAX_PACKET_BYTES;

/// Mosquitto's `password_file` and `acl_file` for the server and every enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MosquittoFiles {
    pub passwd: String,
    pub acl: String,
}

///
/// Every server replica is a user of its own (`server_users`, all with the server's password
/// hash): with `use_username_as_clientid` a client's id is its user name, so no device can take
/// a server's session, nor one replica another's by accident.
pub fn mosquitto_files(
    server_users: &[String],
    server_hash: &str,
    devices: &[(DeviceId, String)],
) -> MosquittoFiles {
    let mut passwd = String::new();
    for user in server_users {
        passwd.push_str(&format!("{user}:{server_hash}\n"));
    }
    for (device, hash) in devices {
        if server_users.iter().any(|u| u == device.as_str()) {
            tracing::warn!(%device, "a device id is a server replica's broker user; left out of the password file");
            continue;
        }
        passwd.push_str(&format!("{device}:{hash}\n"));
    }
    let prefix = TOPIC_PREFIX;
    let mut acl = String::from(
        "# Written by `fleet-server mosquitto-config`; regenerate after enrolling devices.\n\
         # Each server replica reads every device's messages and writes desired state.\n",
    );
    for user in server_users {
        acl.push_str(&format!(
            "user {user}\n\
             topic read {prefix}/+/reported\n\
             topic read {prefix}/+/events\n\
             topic read {prefix}/+/metrics\n\
             topic write {prefix}/+/desired\n\
             \n"
        ));
    }
    acl.push_str(&format!(
        "# Each device (user name = device id) reads its own desired state and writes its own\n\
         # reported state, events and metrics; nothing else.\n\
         pattern read {prefix}/%u/desired\n\
         pattern write {prefix}/%u/reported\n\
         pattern write {prefix}/%u/events\n\
         pattern write {prefix}/%u/metrics\n"
    ));
    MosquittoFiles { passwd, acl }
}

/// The broker settings the fleet needs, as a Mosquitto config fragment (`edgefleet.conf`).
///
/// Mosquitto queues at most 1,000 QoS 1 messages per client by default and silently drops the
/// rest — after the device already has its PUBACK and has let the message go. The server's one
/// session receives every device's messages, so a burst (a fleet reconnecting after an outage)
/// or a server restart would lose telemetry (measured: 3,000 events at full rate, 1,052
/// arrived). Its queue is therefore sized for the whole fleet's backlog; memory, not messages,
/// is what the operator then watches, and it is bounded ([`MAX_QUEUED_BYTES`]) so that no
/// client's queue can take the broker's memory. Packets over [`MAX_PACKET_BYTES`] are refused by
/// the broker itself (it disconnects the sender), so none reaches the server.
pub fn mosquitto_settings(passwd: &std::path::Path, acl: &std::path::Path) -> String {
    format!(
        "# Written by `fleet-server mosquitto-config`. Include it from mosquitto.conf\n\
         # (`include_dir` or copy) and add your own listener lines.\n\
         allow_anonymous false\n\
         password_file {}\n\
         acl_file {}\n\
         # A client's id is its user name: nobody can connect under another's id and knock it\n\
         # off or take over its session.\n\
         use_username_as_clientid true\n\
         # No message larger than any Edgefleet message: the sender is disconnected instead.\n\
         max_packet_size {MAX_PACKET_BYTES}\n\
         # The server's persistent session must queue device messages, not drop them; in bytes\n\
         # every queue is bounded, so a flood cannot take the broker's memory.\n\
         max_queued_messages 1000000\n\
         max_queued_bytes {MAX_QUEUED_BYTES}\n\
         max_inflight_messages 1000\n",
        passwd.display(),
        acl.display()
    )
}

/// The bound on each client's queue at the broker, in bytes: some 440,000 of the usual ~1.2 kB
/// telemetry batches waiting for the server.
pub const MAX_QUEUED_BYTES: usize = 512 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_acl_confines_devices_to_their_own_topics() {
        let servers = ["fleet-server-1".to_owned(), "fleet-server-2".to_owned()];
        let files = mosquitto_files(
            &servers,
            "$7$x",
            &[
                (DeviceId::new("d1").unwrap(), "$7$y".into()),
                (DeviceId::new("fleet-server-2").unwrap(), "$7$z".into()),
            ],
        );
        assert_eq!(
            files.passwd, "fleet-server-1:$7$x\nfleet-server-2:$7$x\nd1:$7$y\n",
            "one user per replica; a device may never take a server's user"
        );
        for server in servers {
            assert!(files.acl.contains(&format!(
                "user {server}\ntopic read edgefleet/v1/devices/+/reported\n"
            )));
        }
        assert!(
            files
                .acl
                .contains("pattern read edgefleet/v1/devices/%u/desired\n")
        );
        assert!(
            !files
                .acl
                .contains("pattern write edgefleet/v1/devices/%u/desired")
        );
        assert!(!files.acl.contains("#\n"), "no wildcard grants");
    }

    #[test]
    fn mosquitto_settings_bind_client_ids_to_users_and_bound_messages() {
        let settings = mosquitto_settings(
            std::path::Path::new("/etc/p"),
            std::path::Path::new("/etc/a"),
        );
        assert!(settings.contains("\nuse_username_as_clientid true\n"));
        assert!(settings.contains(&format!("\nmax_packet_size {MAX_PACKET_BYTES}\n")));
        assert!(settings.contains(&format!("\nmax_queued_bytes {MAX_QUEUED_BYTES}\n")));
        assert!(settings.contains("\nallow_anonymous false\n"));
    }
}
