//! The HTTP accept loop, with the limits `axum::serve` does not have: a cap on open connections,
//! a cap per client address, and a deadline for a request's headers.
//!
//! Without them, connections that trickle their headers a byte at a time (slowloris) were never
//! closed: some 20,000 of them, with no credential, exhausted the process's file descriptors and
//! took HTTP, TUF and the embedded broker down together. Now a connection over a cap is closed at
//! once (counted in `edgefleet_server_http_connections_refused_total`), and one that has not sent
//! a whole request header within `limits.header_read_timeout_seconds` — the first request or the
//! next one on a kept-alive connection — is closed. One client address can therefore hold at most
//! `limits.max_connections_per_client` connections, whatever it does, and the server as a whole
//! stays below its open-file limit.
//!
//! The decisions (admit or refuse a connection) are the plain [`Admission`] type, tested without
//! sockets; the loop owns the listener and stops on `shutdown`, letting in-flight requests finish.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;

use crate::metrics::Metrics;

/// The listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
}

/// Who holds how many connections: the admission decision, with no I/O.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    open: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ServerFull,
    ClientFull,
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            open: 0,
            per_client: HashMap::new(),
        }
    }

    /// Admits a connection from `client`, or says why not.
    pub fn admit(&mut self, client: IpAddr) -> Result<(), Refused> {
        if self.open >= self.limits.max_connections {
            return Err(Refused::ServerFull);
        }
        let held = self.per_client.entry(client).or_default();
        if *held >= self.limits.max_connections_per_client {
            return Err(Refused::ClientFull);
        }
        *held += 1;
        self.open += 1;
        Ok(())
    }

    /// A connection admitted for `client` has closed.
    pub fn release(&mut self, client: IpAddr) {
        if let Some(held) = self.per_client.get_mut(&client) {
            *held -= 1;
            if *held == 0 {
                self.per_client.remove(&client);
            }
            self.open = self.open.saturating_sub(1);
        }
    }

    pub fn open(&self) -> usize {
        self.open
    }
}

/// Gives the admission back when the connection's task ends, however it ends.
struct Admitted {
    admission: Arc<Mutex<Admission>>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut a) = self.admission.lock() {
            a.release(self.client);
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to
/// finish their requests (at most `drain`; those still open then are closed). Returns once no
/// connection task is left.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send,
    drain: Duration,
) -> std::io::Result<()> {
    let admission = Arc::new(Mutex::new(Admission::new(limits)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Connections that ended leave the set, so it holds only open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // moment rather than spin; connections that end free descriptors.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let client = peer.ip();
        let admitted = admission
            .lock()
            .map_err(|_| std::io::Error::other("admission lock poisoned"))?
            .admit(client);
        if let Err(why) = admitted {
            metrics
                .http_connections_refused
                .get_or_create(&crate::metrics::RefusedLabels {
                    reason: match why {
                        Refused::ServerFull => "server_full",
                        Refused::ClientFull => "client_full",
                    }
                    .into(),
                })
                .inc();
            drop(stream);
            continue;
        }
        let guard = Admitted {
            admission: admission.clone(),
            client,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %client, "connection ended with an error");
            }
            drop(guard);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_seconds = drain.as_secs(),
            open = connections.len(),
            "connections still open after the drain period; closing them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 3,
            max_connections_per_client: 2,
            header_read_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_client_cannot_take_more_than_its_share_and_the_server_never_more_than_its_cap() {
        let mut a = Admission::new(limits());
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let device: IpAddr = "192.0.2.2".parse().unwrap();
        let other: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(a.admit(attacker), Ok(()));
        assert_eq!(a.admit(attacker), Ok(()));
        assert_eq!(a.admit(attacker), Err(Refused::ClientFull));
        assert_eq!(a.admit(device), Ok(()), "others still get in");
        assert_eq!(a.admit(other), Err(Refused::ServerFull));
        a.release(attacker);
        assert_eq!(a.admit(other), Ok(()));
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn releasing_what_was_never_admitted_changes_nothing() {
        let mut a = Admission::new(limits());
        a.release("192.0.2.9".parse().unwrap());
        assert_eq!(a.open(), 0);
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        a.admit(c).unwrap();
        a.release(c);
        a.release(c);
        assert_eq!(a.open(), 0);
        assert_eq!(a.admit(c), Ok(()));
    }
}
