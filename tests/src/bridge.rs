//! Mosquitto brokers bridging device traffic into the fleet's own Mosquitto, for fleets past the
//! sockets one broker process may hold (this machine's hard open-file limit is 20,000 per
//! process). Each bridging broker admits devices with the fleet's password and ACL files, so a
//! device is confined to its own topics there as at the fleet's broker; it forwards the devices'
//! reported state, events and metrics (QoS 1) and brings back their desired states, retained
//! flag kept (Mosquitto tells the fleet's broker it is a bridge). The server still holds one
//! connection to one broker and sees every device's messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgefleet_protocol::topic::TOPIC_PREFIX;

use crate::fleet::Mosquitto;
use crate::{free_port, run_ok};

/// The value of `key` in a Mosquitto config fragment (`password_file`, `acl_file`).
fn setting(settings: &Path, key: &str) -> PathBuf {
    let text = std::fs::read_to_string(settings).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(|v| PathBuf::from(v.trim()))
        .unwrap_or_else(|| panic!("{} names no {key}", settings.display()))
}

/// Lets `user` bridge devices' channels into `central`: a password entry and an ACL that let it
/// write what devices write and read their desired states, added to the files `settings`
/// (`fleet-server mosquitto-config`'s `edgefleet.conf`) names, and `central` re-reads them.
/// `mosquitto-config` rewrites those files, so call this after the last time it runs.
pub fn admit_bridge(central: &Mosquitto, settings: &Path, user: &str, password: &str) {
    run_ok(
        Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(setting(settings, "password_file"))
            .args([user, password]),
    );
    let acl = setting(settings, "acl_file");
    let mut text = std::fs::read_to_string(&acl).unwrap();
    text.push_str(&format!(
        "\nuser {user}\n\
         topic write {TOPIC_PREFIX}/+/reported\n\
         topic write {TOPIC_PREFIX}/+/events\n\
         topic write {TOPIC_PREFIX}/+/metrics\n\
         topic read {TOPIC_PREFIX}/+/desired\n"
    ));
    std::fs::write(&acl, text).unwrap();
    central.reload();
}

/// Starts a Mosquitto in `dir` that admits the fleet's devices (the password and ACL files of
/// `settings`, which must already hold them) and bridges them to `central` as `user` (admitted
/// with [`admit_bridge`]). Devices connect to its [`Mosquitto::url`].
pub fn start_bridge(
    dir: &Path,
    settings: &Path,
    central: &Mosquitto,
    user: &str,
    password: &str,
) -> Mosquitto {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    let prefix = TOPIC_PREFIX;
    std::fs::write(
        &conf,
        format!(
            // `user root`: as in `Mosquitto::start`. No persistence: the bench's brokers live
            // as long as their run. `cleansession false`: the fleet's broker keeps the bridge's
            // session, so desired states published while the link is down still arrive.
            "listener {port} 127.0.0.1\n{}persistence false\nuser root\nlog_dest stderr\n\
             log_type error\nlog_type warning\n\
             connection {user}\naddress 127.0.0.1:{central}\nremote_username {user}\n\
             remote_password {password}\nremote_clientid {user}\ncleansession false\n\
             bridge_protocol_version mqttv311\ntry_private true\nrestart_timeout 1 10\n\
             topic {prefix}/+/reported out 1\ntopic {prefix}/+/events out 1\n\
             topic {prefix}/+/metrics out 1\ntopic {prefix}/+/desired in 1\n",
            std::fs::read_to_string(settings).unwrap(),
            central = central.port,
        ),
    )
    .unwrap();
    Mosquitto::run(conf, port)
}
