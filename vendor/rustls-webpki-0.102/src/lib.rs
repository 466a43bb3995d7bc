//! Edgefleet's stand-in for rustls-webpki 0.102.
//!
//! rumqttc 0.25 depends on rustls-webpki 0.102 (with its default features, so `ring`) for one
//! thing: `webpki::Error` as the payload of one variant of its TLS error, which rumqttc itself
//! never constructs. The real crate brought `ring` onto the device beside aws-lc-rs (two crypto
//! providers) and four advisories (RUSTSEC-2026-0049, -0098, -0099, -0104). Certificates are
//! verified by rustls 0.23 through rustls-webpki 0.103, which this does not touch. Remove it
//! (and the `[patch]` entry) once rumqttc depends on webpki 0.103 or makes it optional.

use std::fmt;

/// Uninhabited: nothing in rumqttc (or here) can produce one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {}

impl fmt::Display for Error {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Error {}
