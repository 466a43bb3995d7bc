//! What a daemon tells its service manager (systemd's `Type=notify`): that it is ready, that it
//! is stopping, and that it is alive (watchdog pings).
//!
//! Each message is one datagram to the socket `NOTIFY_SOCKET` names, and it is sent without
//! blocking. A datagram send blocks while the receiver's queue is full (ten datagrams by default,
//! `net.unix.max_dgram_qlen`), and the daemons send from their async runtime: a manager that
//! stops reading for a moment once wedged both of the agent's runtime threads in `sendmsg`, and
//! the agent never finished draining on SIGTERM. Here a full queue drops that one message and
//! says so; the next ping is another chance. `sd_notify::notify`
//! sends blocking and is not used.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The environment variable naming the service manager's socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// What became of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The datagram is in the manager's queue.
    Sent,
    /// No service manager listens (`NOTIFY_SOCKET` unset): nothing to tell.
    NoManager,
    /// The manager's queue is full: this message was dropped rather than wait.
    QueueFull,
}

/// Tells the service manager `state`, if one listens, without blocking.
fn notify(state: &NotifyState) -> io::Result<Delivery> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) => notify_to(&socket, state),
        None => Ok(Delivery::NoManager),
    }
}

/// Sends `state` to the socket `socket` names: a path, or an abstract name after `@` (as
/// systemd's sd_notify(3) accepts).
fn notify_to(socket: &OsStr, state: &NotifyState) -> io::Result<Delivery> {
    let address = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.set_nonblocking(true)?;
    let message = format!("{state}\n");
    match sender.send_to_addr(message.as_bytes(), &address) {
        Ok(_) => Ok(Delivery::Sent),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Delivery::QueueFull),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "notifying the service manager at {} ({NOTIFY_SOCKET}): {e}",
                socket.to_string_lossy()
            ),
        )),
    }
}

/// Tells the manager `state` and logs what could not be told: a daemon never fails for it.
pub fn tell(state: &NotifyState) {
    match notify(state) {
        Ok(Delivery::Sent | Delivery::NoManager) => {}
        Ok(Delivery::QueueFull) => {
            tracing::warn!(%state, "the service manager's queue is full: notification dropped")
        }
        Err(e) => tracing::warn!(%state, error = %e, "cannot notify the service manager"),
    }
}

/// How often to ping the watchdog: half the manager's `WATCHDOG_USEC`, or `None` where no
/// watchdog is asked for (or it is asked of another process).
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Tells the manager the daemon is ready and, where it asks for a watchdog, spawns the task
/// that pings it until `stop` is cancelled; the caller joins that task.
pub fn ready(stop: &CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    tell(&NotifyState::Ready);
    watchdog_interval().map(|interval| tokio::spawn(feed_watchdog(interval, stop.clone())))
}

/// Pings the watchdog every `interval` until `stop` is cancelled. The pings come from the
/// runtime, so a wedged runtime stops them and the manager restarts the daemon. A full queue is
/// logged once per stretch of drops, not at every ping.
async fn feed_watchdog(interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropping = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match notify(&NotifyState::Watchdog) {
            Ok(Delivery::QueueFull) if !dropping => {
                dropping = true;
                tracing::warn!("the service manager's queue is full: watchdog pings are dropped");
            }
            Ok(Delivery::QueueFull) => {}
            Ok(Delivery::Sent | Delivery::NoManager) => dropping = false,
            Err(e) => tracing::warn!(error = %e, "cannot ping the service manager's watchdog"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Sends watchdog pings to `socket` from another thread until one is dropped; panics if a
    /// send blocks (no answer within 10 s) instead.
    fn send_until_dropped(socket: &OsStr) -> (usize, Delivery) {
        let socket = socket.to_owned();
        let (done, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            for sent in 0..100_000 {
                let delivery = notify_to(&socket, &NotifyState::Watchdog).unwrap();
                if delivery != Delivery::Sent {
                    let _ = done.send((sent, delivery));
                    return;
                }
            }
        });
        outcome
            .recv_timeout(Duration::from_secs(10))
            .expect("a notification blocked on a full queue")
    }

    #[test]
    fn a_manager_that_stops_reading_costs_dropped_pings_not_a_blocked_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        let (sent, delivery) = send_until_dropped(path.as_os_str());
        assert_eq!(delivery, Delivery::QueueFull);
        assert!(sent >= 1, "the queue took nothing");

        // What was queued arrives whole, one message per datagram; once read, sends go through.
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
        assert_eq!(
            notify_to(path.as_os_str(), &NotifyState::Ready).unwrap(),
            Delivery::Sent
        );
    }

    #[test]
    fn an_abstract_socket_is_named_with_an_at_sign() {
        let name = format!("edgefleet-notify-test-{}", std::process::id());
        let manager =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let socket = format!("@{name}");
        assert_eq!(
            notify_to(OsStr::new(&socket), &NotifyState::Stopping).unwrap(),
            Delivery::Sent
        );
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let error = notify_to(path.as_os_str(), &NotifyState::Ready).unwrap_err();
        assert!(
            error.to_string().contains("gone.sock") && error.to_string().contains(NOTIFY_SOCKET),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_feeder_stops_when_told() {
        let stop = CancellationToken::new();
        let feeder = tokio::spawn(feed_watchdog(Duration::from_millis(100), stop.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!feeder.is_finished());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), feeder)
            .await
            .expect("the feeder outlived its stop")
            .unwrap();
    }
}
